"""Transformer-to-transformer losses for text: TinyBERT layer-wise terms, MiniLM relations, sentence embeddings."""
