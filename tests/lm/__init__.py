"""Tests of the language-model losses and helpers."""
