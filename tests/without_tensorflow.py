"""Every path that does not read through tf.data, run in an environment
without tensorflow and tensorflow-datasets (tests/test_without_tensorflow.py
makes one and runs `python -m tests.without_tensorflow WORKDIR` there):
training, evaluating and predicting on CIFAR from its binary files, the
synthetic benchmark, summary and convert; then a tf.data path, which must
end in the one-line error. Prints one JSON object of what it saw."""

import importlib.util
import json
import os
import sys

import numpy as np


def main(root: str):
  seen = {
    'tensorflow_findable': importlib.util.find_spec('tensorflow') is not None,
    'tfds_findable': importlib.util.find_spec('tensorflow_datasets')
    is not None,
  }
  from PIL import Image

  import resnet_jax
  from resnet_jax.data import cifar
  from resnet_jax.errors import ConfigError
  from resnet_jax.eval import predict
  from resnet_jax.eval.saved_run import evaluate_workdir
  from resnet_jax.model import counting
  from resnet_jax.model import resnet
  from resnet_jax.model import torch_convert
  from resnet_jax.run import saved_config
  from resnet_jax.train import benchmark
  from resnet_jax.train import torchvision_io
  from tests.helpers import SAMPLE
  from tests.helpers import few_devices
  from tests.helpers import load_config
  from tests.helpers import tiny_config

  workdir = os.path.join(root, 'cifar')
  config = tiny_config(length=2)
  trained = resnet_jax.train_and_evaluate(config, workdir, few_devices())
  evaluated = evaluate_workdir(saved_config.read(workdir), workdir)
  seen['trained'] = trained
  seen['evaluated'] = evaluated

  # A real CIFAR picture as a PNG: Pillow reads it as the arrays hold it.
  batch = cifar.read_binary(
    os.path.join(SAMPLE, 'data_batch_1.bin'), 'cifar10', 10
  )
  png = os.path.join(root, 'picture.png')
  Image.fromarray(batch.images[0]).save(png)
  run = resnet_jax.load_run(workdir)
  prepared = predict.prepare_images(config, [png], run.pixel_mean)
  expected = resnet_jax.normalise(batch.images[:1], run.pixel_mean)
  seen['png_as_the_array'] = bool(np.array_equal(prepared, expected))
  seen['predicted'] = resnet_jax.predict_files(workdir, [png])

  synthetic = tiny_config(length=2)
  synthetic.data.local_dir = os.path.join(root, 'no-such-folder')
  seen['benchmark'] = benchmark.step_report(synthetic, 2, 1, synthetic=True)

  network = load_config('configs/cifar10.py:resnet20')
  summary = counting.count(
    resnet.build(network.model, 10), network.data.image_size
  )
  seen['summary_params'] = summary['params']

  # convert: a torchvision-layout ResNet-18 file in, a workdir out.
  imagenet = load_config('configs/imagenet.py:resnet18,shortcut=B')
  model = resnet.build(imagenet.model, 1000)
  import jax

  variables = jax.jit(model.init)(
    jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)
  )
  state_dict, _ = torch_convert.export_state_dict(
    variables, np.array([124.0, 116.0, 104.0])
  )
  weights = os.path.join(root, 'resnet18.safetensors')
  torch_convert.write(weights, state_dict)
  seen['converted'] = torchvision_io.import_checkpoint(
    imagenet, weights, os.path.join(root, 'converted')
  )

  # A tf.data path: an image folder of two classes, a picture each.
  images = os.path.join(root, 'images')
  for split in ('train', 'val'):
    for i in range(2):
      os.makedirs(os.path.join(images, split, str(i)))
      path = os.path.join(images, split, str(i), 'a.png')
      Image.fromarray(batch.images[i]).save(path)
  folder = load_config('configs/imagenet.py:resnet18')
  folder.data.update(image_folder=images, num_classes=2)
  folder.train.batch_size = 2
  try:
    resnet_jax.train_and_evaluate(folder, os.path.join(root, 'folder'))
  except ConfigError as e:
    seen['tf_data_error'] = str(e)
  seen['tensorflow_imported'] = sorted(
    m for m in sys.modules if m.split('.')[0].startswith('tensorflow')
  )
  print(json.dumps(seen, default=float))


if __name__ == '__main__':
  main(sys.argv[1])
