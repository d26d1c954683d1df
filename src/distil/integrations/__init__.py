"""Adapters that let other training loops drive a `Distiller`: `distil.integrations.lightning`
(a PyTorch Lightning module) and `distil.integrations.hf` (a Hugging Face `Trainer` subclass).

Each calls the same Distiller in its training step, so losses, taps and adapters behave exactly
as under `distil.trainer.Trainer`; nothing is re-implemented. Neither is imported here: each needs
its own optional package (`pip install "distil[lightning]"`, `pip install "distil[text]"`).
"""
