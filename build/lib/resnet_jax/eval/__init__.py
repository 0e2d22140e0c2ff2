"""Evaluation: the eval steps, the protocols, BN re-estimation, prediction."""
