"""The built-in config files (installed as resnet_jax.configs)."""
