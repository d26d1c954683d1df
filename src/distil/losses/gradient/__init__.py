"""Gradient-based knowledge: losses on the models' input-gradients (Jacobians)."""
