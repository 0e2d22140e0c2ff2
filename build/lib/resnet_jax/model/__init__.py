"""The networks: blocks, the ResNet family, counting, torchvision weights."""
