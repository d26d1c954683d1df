"""Relation-based knowledge: losses on the structure between the samples of a batch."""
