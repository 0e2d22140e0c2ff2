"""The networks' options by name, without JAX: what a config file or a
command line may ask for (config/arguments.py) is known before JAX is
imported, so that a command's --help and its refusal of a bad argument
cost no JAX import."""

# 'A' zero-pads, 'B' projects where the shape changes, 'C' projects always,
# 'D' (ResNet-D, He et al. 2019) average-pools then projects where it changes.
SHORTCUTS = ('A', 'B', 'C', 'D')
BLOCK_STYLES = ('standard', 'preact')
STRIDES = ('v1', 'v1.5')
STEMS = ('standard', 'deep')  # ImageNet: the 7x7, or ResNet-C's 3x3s
DTYPES = ('float32', 'bfloat16')  # the compute dtype; parameters stay f32
