"""A run on disk: the workdir, checkpoints, resume, preemption, metrics,
the lock."""
