"""One process of a two-process job (tests/test_parallel.py): writes the
training mean and the first training labels this process gets from an
image folder, as OUT/mean_<process>.npy and OUT/labels_<process>.npy.

  python tests/two_process_input.py IMAGE_FOLDER --workdir=OUT
"""

import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from resnet_jax import processes  # noqa: E402

processes.start()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from resnet_jax.data import image_sets  # noqa: E402
from resnet_jax.data import inputs  # noqa: E402
from tests.helpers import input_sample_config  # noqa: E402


def main(folder: str, out: str):
  config = input_sample_config(folder)
  data = inputs.Streaming(config)  # checks the processes' listings agree
  me = jax.process_index()
  np.save(os.path.join(out, f'mean_{me}.npy'), data.pixel_mean())
  ds = image_sets.train_dataset(
    config.data, config.train.batch_size, config.train.seed
  )
  labels = [y for _, y in ds.take(3).as_numpy_iterator()]
  np.save(os.path.join(out, f'labels_{me}.npy'), np.stack(labels))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2].removeprefix('--workdir='))
