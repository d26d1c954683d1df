"""Tiny, randomly initialised causal LMs and text for the language-model tests (no downloads)."""

import pathlib

import pytest
import torch

SHAKESPEARE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "lm_text" / "tinyshakespeare.txt"

PARAGRAPH = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: "
    "You are all resolved rather to die than to famish? All: Resolved. resolved. First Citizen: First, "
    "you know Caius Marcius is chief enemy to the people. All: We know't, we know't. First Citizen: Let "
    "us kill him, and we'll have corn at our own price. Is't a verdict? All: No more talking on't; let it "
    "be done: away, away! Second Citizen: One word, good citizens. "
)


@pytest.fixture(scope="session")
def text() -> str:
    """About 40k characters of English: TinyShakespeare when ../shared has it, else a repeated paragraph."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:40_000]
    return PARAGRAPH * 100


@pytest.fixture(scope="session")
def char_vocab(text) -> dict[str, int]:
    """Character-level vocabulary; id 0 is the padding / end-of-text token."""
    return {"<pad>": 0, **{c: i + 1 for i, c in enumerate(sorted(set(text)))}}


def gpt2(vocab: int, hidden: int = 32, layers: int = 2, positions: int = 64):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=2, n_positions=positions,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config)


def llama(vocab: int, hidden: int = 32, layers: int = 2, positions: int = 64):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=positions,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture
def make_gpt2():
    """Factory: tiny GPT-2 (final norm `transformer.ln_f`, tied head)."""
    return gpt2


@pytest.fixture
def make_llama():
    """Factory: tiny Llama (final norm `model.norm`, untied head)."""
    return llama


@pytest.fixture
def lm_batch():
    """A right-padded batch of 3 sequences over a 50-token vocabulary, with a masked prompt."""
    torch.manual_seed(1)
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[0, :3] = -100  # a prompt that is not learned
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
