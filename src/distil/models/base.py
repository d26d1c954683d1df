"""The model registry. Recipes name a registered factory and its keyword arguments."""

from distil.registry import Registry

MODELS: Registry = Registry("model")
