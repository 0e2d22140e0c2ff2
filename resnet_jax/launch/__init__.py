"""Many runs at once: one run as a task (task.py), several on one
machine's devices (local.py), or a job array on a SLURM cluster
(slurm.py)."""
