"""Trains and evaluates a network from a config file.

  python train.py --config=configs/cifar10.py:resnet20 --workdir=runs/r20

Running the same command again resumes from WORKDIR/checkpoints. The same
command installed: `resnet-jax-train` (or `python -m resnet_jax.train`).
"""

from resnet_jax.train.__main__ import cli

if __name__ == '__main__':
  cli()
