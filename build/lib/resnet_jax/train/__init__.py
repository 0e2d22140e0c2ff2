"""Training: the step, the optimizer, the loop, fine-tuning."""
