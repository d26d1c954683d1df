"""Text distillation: BiLSTM/CNN/static-embedding students, Tang et al.'s transfer-set augmentation,
tokenisation helpers and transformer layer names; `transformers`/`tokenizers` are imported lazily."""

from distil.text.augment import augment, predict
from distil.text.embeddings import MeanPoolEncoder, StaticEmbedding, mean_pool, static_embedding
from distil.text.layers import transformer_layers
from distil.text.students import BiLSTMClassifier, TextCNN, bilstm_classifier, text_cnn
from distil.text.tokenize import TextDataset, encode, word_tokenizer

__all__ = [
    "BiLSTMClassifier", "MeanPoolEncoder", "StaticEmbedding", "TextCNN", "TextDataset", "augment",
    "bilstm_classifier", "encode", "mean_pool", "predict", "static_embedding", "text_cnn",
    "transformer_layers", "word_tokenizer",
]
