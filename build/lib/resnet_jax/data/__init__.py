"""The input: CIFAR, image folders and tfds sets, their order, host and
device augmentation."""
