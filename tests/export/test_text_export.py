"""ONNX export of the students that read token ids: the BiLSTM, TextCNN, a small BERT and causal
language models give PyTorch's logits through onnxruntime at batch sizes and lengths the trace
never saw, and `distil export` of a text or language-model run writes the tokenizer and a model card."""

import json

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distil.checkpoint import save_weights
from distil.cli.evaluate import load_saved_run
from distil.cli.main import app
from distil.config import load_recipe
from distil.evaluate import predict
from distil.export import OnnxModel, export_onnx
from distil.models import MODELS
from distil.pipeline import run_recipe
from distil.teacher import as_logits, call_model
from helpers import write_recipe

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

VOCAB = 30
STUDENTS = {
    "bilstm_classifier": {"vocab_size": VOCAB, "num_classes": 3, "embed_dim": 8, "hidden": 6, "fc_dim": 8},
    "text_cnn": {"vocab_size": VOCAB, "num_classes": 3, "embed_dim": 8, "widths": [2, 3], "maps": 4},
    "hf_bert_classifier": {"vocab_size": VOCAB, "num_classes": 3, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                           "max_length": 32},
    "gpt2": {"arch": "gpt2", "vocab_size": VOCAB, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 32},
    "llama": {"arch": "llama", "vocab_size": VOCAB, "hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 32},
}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def token_batch(lengths, width, seed=0):
    """Right-padded random token ids (padding id 0) and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def test_bilstm_traced_path_gives_the_packed_final_states():
    """The path torch.export traces (no packed sequences) must give, for every row, the final
    states of the bidirectional LSTM run on that row's real tokens alone: the packed path's numbers."""
    torch.manual_seed(0)
    model = MODELS.get("bilstm_classifier")(**STUDENTS["bilstm_classifier"]).eval()
    batch = token_batch([7, 1, 4, 0], 7)  # a full row, one token, a middle length, an all-padding row (length 1)
    x = model.embedding(batch["input_ids"])
    lengths = batch["attention_mask"].sum(1).clamp_min(1)
    with torch.no_grad():
        traced = model._final_states_padded(x, lengths)
        alone = torch.stack([torch.cat(list(model.lstm(x[i : i + 1, : int(n)])[1][0][:, 0])) for i, n in enumerate(lengths)])
        _, (h, _) = model.lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    assert torch.allclose(traced, alone, atol=1e-6)
    assert torch.allclose(torch.cat([h[0], h[1]], -1), alone, atol=1e-6)


@pytest.mark.parametrize("name", STUDENTS)
def test_dict_input_students_match_pytorch_in_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    factory = "hf_causal_lm" if name in ("gpt2", "llama") else name
    model = MODELS.get(factory)(**STUDENTS[name]).eval()
    path = export_onnx(model, token_batch([5, 3], 5), tmp_path / "student.onnx")
    runner = OnnxModel(path)
    assert runner.input_names == ["input_ids", "attention_mask"]
    batch = token_batch([9, 2, 6, 9, 1], 9, seed=1)  # another batch size and length than the trace's
    with torch.no_grad():
        expected = as_logits(call_model(model, batch)).float()
    got = call_model(runner, batch)
    assert got.shape == expected.shape == ((5, 9, VOCAB) if factory == "hf_causal_lm" else (5, 3))
    assert (got - expected).abs().max().item() < 1e-4


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A BiLSTM distilled for two epochs on toy sentiment from a random BiLSTM teacher, exported."""
    pytest.importorskip("tokenizers")
    from distil.data.text import TOY_SENTIMENT_VOCAB_SIZE

    tmp = tmp_path_factory.mktemp("text_export")
    params = {"embed_dim": 16, "hidden": 8, "fc_dim": 8}
    teacher = tmp / "teacher.safetensors"
    save_weights(MODELS.get("bilstm_classifier")(vocab_size=TOY_SENTIMENT_VOCAB_SIZE, num_classes=2, **params), teacher)
    recipe = write_recipe(
        tmp / "r.yaml", data={"name": "toy_sentiment", "params": {"n_train": 200, "n_val": 50, "n_test": 40}, "batch_size": 32},
        teacher={"model": "bilstm_classifier", "params": params, "checkpoint": str(teacher)},
        student={"model": "bilstm_classifier", "params": params}, epochs=2, losses=[{"name": "logit_mse"}],
    )
    run_dir = run_recipe(load_recipe(recipe), progress=False).output_dir
    result = invoke("export", run_dir)
    assert result.exit_code == 0, result.stderr
    return run_dir


def test_text_export_writes_the_tokenizer_and_skips_static_int8(text_run):
    out = text_run / "export"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "export.json", "student.int8.onnx", "student.onnx",
                                                     "tokenizer.json"]
    report = json.loads((out / "export.json").read_text())
    assert report["input"]["inputs"] == {"input_ids": {"shape": ["batch", "sequence"], "dtype": "int64"},
                                         "attention_mask": {"shape": ["batch", "sequence"], "dtype": "int64"}}
    assert list(report["skipped"]) == ["student.int8-static.onnx"] and "onnx_int8_static" not in report
    assert report["samples"] == 40
    assert report["onnx"]["agreement"] == 1.0 and report["onnx"]["max_abs_diff"] < 1e-4
    assert report["onnx"]["accuracy"] == pytest.approx(report["pytorch"]["accuracy"])
    assert report["onnx_int8"]["agreement"] >= 0.9

    from tokenizers import Tokenizer

    from distil.data.text import toy_sentences

    run = load_saved_run(text_run)
    texts, _ = toy_sentences(40, 0 + 2)  # the test split's sentences (seed + 2)
    saved = Tokenizer.from_file(str(out / "tokenizer.json"))
    row = run.bundle.test[0]["input_ids"]
    assert saved.encode(texts[0]).ids == row[row != 0].tolist()


def test_model_card_says_what_the_student_reads_and_how_well_it_does(text_run):
    card = (text_run / "export" / "README.md").read_text()
    metrics = json.loads((text_run / "metrics.json").read_text())
    recipe = (text_run / "recipe.yaml").read_text()
    assert card.startswith("---\n") and "task: classification" in card and "data: toy_sentiment" in card
    assert "# bilstm_classifier distilled from bilstm_classifier" in card
    assert "| `input_ids` | batch x sequence | int64 |" in card and "`tokenizer.json`" in card
    assert "(batch, 2)" in card and "Distillation losses: logit_mse." in card
    assert f"| distilled | {metrics['distilled']['accuracy']:.2%} |" in card
    assert "student.int8-static.onnx: not written" in card
    assert recipe.strip() in card


def test_predict_with_the_text_onnx_file_gives_the_pytorch_classes(text_run, tmp_path):
    from distil.data.text import toy_sentences

    texts, _ = toy_sentences(40, 0 + 2)
    (tmp_path / "reviews.txt").write_text("\n".join(texts[:12]) + "\n")
    run = load_saved_run(text_run)
    logits, _ = predict(run.student, DataLoader(torch.utils.data.Subset(run.bundle.test, range(12)), batch_size=12))
    result = invoke("predict", text_run / "export" / "student.onnx", tmp_path / "reviews.txt", "-o", tmp_path / "p.jsonl")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["class"] for r in rows] == logits.argmax(-1).tolist()
    assert [r["probability"] for r in rows] == pytest.approx(logits.softmax(-1).max(-1).values.tolist(), abs=1e-5)


def test_language_model_export_checks_next_tokens(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", task="language_modeling",
        data={"name": "toy_text", "params": {"n_chars": 3000, "block_size": 16}, "batch_size": 16},
        teacher={"model": "hf_causal_lm", "params": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "max_length": 16},
                 "epochs": 1},
        student={"model": "hf_causal_lm", "params": {"hidden_size": 8, "num_layers": 1, "num_heads": 2, "max_length": 16}},
        losses=[{"name": "token_kl"}], epochs=1,
    )
    run_dir = run_recipe(load_recipe(recipe), progress=False).output_dir
    result = invoke("export", run_dir)
    assert result.exit_code == 0, result.stderr
    out = run_dir / "export"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "characters.json", "export.json", "student.int8.onnx",
                                                     "student.onnx"]
    report = json.loads((out / "export.json").read_text())
    assert report["onnx"]["agreement"] == 1.0 and report["onnx"]["max_abs_diff"] < 1e-4
    assert report["onnx"]["perplexity"] == pytest.approx(report["pytorch"]["perplexity"], rel=1e-4)
    assert report["onnx_int8"]["agreement"] >= 0.8
    chars = json.loads((out / "characters.json").read_text())["chars"]
    assert chars == load_saved_run(run_dir).bundle.tokenizer.chars
    card = (out / "README.md").read_text()
    assert f"(batch, sequence, {len(chars)})" in card and "`characters.json`" in card
