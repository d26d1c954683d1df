"""CIFAR-style reference networks (32x32 inputs) used in distillation benchmark tables."""
