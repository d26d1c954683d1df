"""Tests of the relation-based losses (a package, so test_end_to_end.py names do not clash)."""
