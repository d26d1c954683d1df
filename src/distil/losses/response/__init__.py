"""Response-based knowledge: losses on the models' outputs (logits or predictions)."""
