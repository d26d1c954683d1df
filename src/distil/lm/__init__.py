"""Causal language-model helpers: the causal shift, vocabularies, teacher generation and the top-k logit cache."""
