"""Config arguments and the valid range of every key."""
