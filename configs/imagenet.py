"""ImageNet networks of He et al. 2015, Table 1 (Tables 2-4).

Argument: resnet18/34/50/101/152, plain18/34 or resnext50_32x4d, then options:
shortcut=A|B|C|D, stride=v1|v1.5, block=standard|preact, dtype=...

  python -m resnet_jax.summary --config=configs/imagenet.py:resnet50
  python -m resnet_jax.summary --config=configs/imagenet.py:resnet34,shortcut=C

ResNet-50 (v1, option B) has 25,557,032 parameters and 3.86G
multiply-accumulates per 224x224 image (v1.5: 4.09G).
"""

from ml_collections import config_dict

from resnet_jax import config_args


def get_config(arg: str = 'resnet50') -> config_dict.ConfigDict:
  config = config_dict.ConfigDict()
  config.model = config_args.model_config(arg, family='imagenet')

  config.data = config_dict.ConfigDict()
  config.data.name = 'imagenet2012'
  config.data.num_classes = 1000
  config.data.image_size = 224  # the paper's training crop
  # train/<class>/*.jpg and val/<class>/*.jpg; None: tfds imagenet2012.
  config.data.image_folder = config_dict.placeholder(str)
  # tfds' manual folder with the official tars; None: <data dir>/downloads/manual
  config.data.manual_dir = config_dict.placeholder(str)
  config.data.tfds_data_dir = config_dict.placeholder(str)
  config.data.train_crop = 'scale'  # section 3.4; or 'inception'
  config.data.shuffle_buffer = 16384  # examples (file names or records)
  config.data.eval_protocol = 'center'  # or 'ten_crop', 'multiscale'
  return config
