"""Tests of the feature-based distillation losses."""
