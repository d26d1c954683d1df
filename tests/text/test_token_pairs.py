"""Cross-tokenizer pairs: a pre-trained teacher reads its own tokenizer's ids while the small
student keeps a word vocabulary built from the training text (#15 item 9), in one run, with the
teacher's folder named once."""

import functools
import json

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import default_collate
from typer.testing import CliRunner

from distil.batch import trim_padding
from distil.build import build_data, build_distiller, check_recipe
from distil.cli.main import app
from distil.config import recipe_from_dict
from distil.data import DATASETS
from distil.data.text import TOY_SENTIMENT_VOCAB_SIZE, TOY_WORDS, toy_sentences
from distil.distiller import Distiller, Term
from distil.errors import ConfigError
from distil.losses import LOSSES
from distil.checkpoint import load_weights
from distil.models import MODELS
from distil.pipeline import run_recipe
from helpers import TeacherCallsInSteps

transformers = pytest.importorskip("transformers")
FILLER = 400  # a pre-trained vocabulary is much larger than the data's own words


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A folder as save_pretrained writes it: a tokenizer whose ids differ from the toy's word ids
    (reversed words after 400 fillers) and a small BERT classifier over that vocabulary."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"filler{i}" for i in range(FILLER)), *reversed(TOY_WORDS)]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    folder = tmp_path_factory.mktemp("pretrained")
    fast.save_pretrained(folder)
    MODELS.get("hf_bert_classifier")(num_classes=2, vocab_size=len(fast), hidden_size=32, num_layers=1,
                                     num_heads=2).save_pretrained(folder)
    return folder, fast


def test_the_student_keeps_the_word_vocabulary_beside_the_teachers_tokenizer(pretrained):
    folder, fast = pretrained
    pairs = DATASETS.get("toy_sentiment")(n_train=30, n_val=10, n_test=10, tokenizer=str(folder))
    plain = DATASETS.get("toy_sentiment")(n_train=30, n_val=10, n_test=10)
    texts, _ = toy_sentences(30, seed=0)
    for i in (0, 7, 29):
        item = pairs.train[i]
        assert torch.equal(item["input_ids"], plain.train[i]["input_ids"])  # the student's word ids
        teacher_ids = fast(texts[i])["input_ids"]
        assert item["teacher_inputs"]["input_ids"][:len(teacher_ids)].tolist() == teacher_ids
        assert int(item["teacher_inputs"]["attention_mask"].sum()) == len(teacher_ids)
        assert item["labels"] == plain.train[i]["labels"]
    assert pairs.model_kwargs == {"vocab_size": TOY_SENTIMENT_VOCAB_SIZE}
    assert pairs.teacher_data.model_kwargs == {"vocab_size": len(fast)} and len(fast) > FILLER
    assert torch.equal(pairs.teacher_data.test[3]["input_ids"], pairs.test[3]["teacher_inputs"]["input_ids"])
    assert pairs.preprocessing["teacher_tokenizer"] == str(folder)
    gathered = pairs.train.batch_gatherer(None)(torch.tensor([4, 0, 9]))  # the Trainer's fast path
    collated = default_collate([pairs.train[i] for i in (4, 0, 9)])
    assert torch.equal(gathered["input_ids"], collated["input_ids"])
    assert torch.equal(gathered["teacher_inputs"]["input_ids"], collated["teacher_inputs"]["input_ids"])
    same = DATASETS.get("toy_sentiment")(n_train=30, tokenizer=str(folder), student_tokenizer="teacher")
    assert same.teacher_data is None and same.model_kwargs == {"vocab_size": len(fast)}
    assert same.train[0]["input_ids"][:len(fast(texts[0])["input_ids"])].tolist() == fast(texts[0])["input_ids"]


def _recipe(folder, tmp_path, **changes) -> dict:
    raw = {
        "seed": 0, "task": "classification",
        "data": {"name": "toy_sentiment", "params": {"n_train": 400, "n_val": 50, "n_test": 100}, "batch_size": 25},
        "teacher": {"model": "hf_pretrained", "params": {"path": str(folder)}, "epochs": 8},
        "student": {"model": "bilstm_classifier", "params": {"embed_dim": 16, "hidden": 16, "fc_dim": 16}},
        "losses": [{"name": "logit_mse"}],
        "optimizer": {"name": "adamw", "lr": 0.003}, "epochs": 2, "output_dir": str(tmp_path / "run"),
    }
    return raw | changes


def test_each_model_reads_its_own_ids_in_training(pretrained, tmp_path):
    folder, fast = pretrained
    recipe = recipe_from_dict(_recipe(folder, tmp_path))
    bundle = build_data(recipe)  # the teacher's folder is named once: its tokenizer comes with it
    assert bundle.preprocessing["teacher_tokenizer"] == str(folder)
    check_recipe(recipe, bundle)
    teacher = MODELS.get("hf_pretrained")(str(folder), num_classes=2)
    distiller = build_distiller(recipe, bundle, [teacher])
    seen = {}

    def record(name):
        return lambda module, args: seen.__setitem__(name, args[0].clone())

    distiller.student.embedding.register_forward_pre_hook(record("student"))
    teacher.bert.embeddings.word_embeddings.register_forward_pre_hook(record("teacher"))
    batch = default_collate([bundle.train[i] for i in range(5)])
    out = distiller(batch)
    assert torch.equal(seen["student"], batch["input_ids"]) and int(seen["student"].max()) < TOY_SENTIMENT_VOCAB_SIZE
    assert torch.equal(seen["teacher"], batch["teacher_inputs"]["input_ids"]) and int(seen["teacher"].max()) > FILLER
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(
            distiller.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]),
            teacher(**batch["teacher_inputs"]).logits)
    assert torch.allclose(out["logit_mse"], expected, atol=1e-6)


def test_distil_run_trains_and_evaluates_both_sides(pretrained, tmp_path):
    folder, _ = pretrained
    (tmp_path / "in.yaml").write_text(json.dumps(_recipe(folder, tmp_path)))
    run = CliRunner().invoke(app, ["run", str(tmp_path / "in.yaml"), "--no-progress"])
    assert run.exit_code == 0, run.output
    assert "not fewer than its teacher" not in run.output
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["distilled"]["params"] < saved["teacher"]["params"] / 5
    assert saved["teacher"]["accuracy"] > 0.6  # fine-tuned on its own ids
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads(evaluated.stdout)
    assert again["teacher"]["accuracy"] == pytest.approx(saved["teacher"]["accuracy"])
    assert again["student"]["agreement"] == pytest.approx(saved["distilled"]["agreement"])


def test_one_line_refusals(pretrained, tmp_path):
    folder, _ = pretrained
    student = {"model": "hf_pretrained", "params": {"path": str(folder)}}
    with pytest.raises(ConfigError, match="hf_pretrained student reads its own tokenizer's ids.*student_tokenizer"):
        recipe = recipe_from_dict(_recipe(folder, tmp_path, student=student))
        check_recipe(recipe, build_data(recipe))
    other = tmp_path / "other"
    other.mkdir()
    two = [{"model": "hf_pretrained", "params": {"path": str(folder)}, "epochs": 1},
           {"model": "hf_pretrained", "params": {"path": str(other)}, "epochs": 1}]
    with pytest.raises(ConfigError, match="data.params.tokenizer: the teachers come from 2 folders"):
        build_data(recipe_from_dict(_recipe(folder, tmp_path, teacher=two)))
    chain = {"assistants": [{"model": "bilstm_classifier", "params": {"embed_dim": 16, "hidden": 16, "fc_dim": 16}}]}
    with pytest.raises(ConfigError, match=r"data.params.tokenizer \(the teacher reads .* ids, the student its own\): "
                                          "chain cannot be combined"):
        recipe = recipe_from_dict(_recipe(folder, tmp_path, chain=chain))
        check_recipe(recipe, build_data(recipe))


def _with_pool(folder, tmp_path, name, **teacher):
    """Toy pairs cut to 8 tokens (so the labelled set and the pool pad alike) plus an unlabelled pool."""
    raw = _recipe(folder, tmp_path, output_dir=str(tmp_path / name), epochs=1,
                  transfer={"name": "toy_sentiment", "params": {"n_train": 300, "seed": 9, "max_length": 8}, "ratio": 1})
    raw["data"]["params"].update(max_length=8, n_val=40)  # no evaluation batch of 50 rows
    raw["teacher"] = raw["teacher"] | {"epochs": 2} | teacher
    return raw


def test_a_transfer_set_gives_the_teacher_its_own_ids_of_the_pool_rows(pretrained, tmp_path):
    folder, _ = pretrained
    fed = []
    hook = None

    def record(module, args):
        if module.training is False and torch.is_grad_enabled() is False:
            fed.append(args[0].clone())

    original = MODELS.get("hf_pretrained")

    @functools.wraps(original)
    def hooked(*a, **k):  # the run's teacher, with its id embedding watched
        nonlocal hook
        model = original(*a, **k)
        hook = model.bert.embeddings.word_embeddings.register_forward_pre_hook(record)
        return model

    with TeacherCallsInSteps() as calls, pytest.MonkeyPatch.context() as mp:
        mp.setitem(MODELS._items, "hf_pretrained", hooked)
        run_recipe(recipe_from_dict(_with_pool(folder, tmp_path, "live")), progress=False)
    hook.remove()
    assert calls.count == 16  # 400 labelled rows in batches of 25, one epoch, the live teacher in every step
    steps = [ids for ids in fed if ids.shape[0] == 50]  # 25 labelled + 25 pool rows
    assert len(steps) >= 16
    ids = torch.cat([s.flatten() for s in steps])
    assert bool(((ids < 5) | (ids >= 5 + FILLER)).all())  # teacher ids only: no student word id (5..) among them


def test_the_cache_holds_the_teachers_logits_of_its_own_ids_for_labelled_and_pool_rows(pretrained, tmp_path):
    folder, _ = pretrained
    raw = _with_pool(folder, tmp_path, "cached", cache={"dtype": "float32"})
    with TeacherCallsInSteps() as calls:
        run_recipe(recipe_from_dict(raw), progress=False)
    assert calls.count == 0
    recipe = recipe_from_dict(raw)
    teacher = load_weights(MODELS.get("hf_pretrained")(str(folder), num_classes=2),
                           tmp_path / "cached" / "teacher" / "best" / "student.safetensors").eval()
    pool = build_data(recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"params": recipe.transfer.params})})).train
    stored = load_file(str(tmp_path / "cached" / "teacher_cache" / "transfer" / "teacher_logits.safetensors"))["logits"]
    rows = default_collate([pool[i] for i in range(len(pool))])
    with torch.no_grad():
        want = teacher(**rows["teacher_inputs"]).logits
    assert stored.shape == (300, 2)
    torch.testing.assert_close(stored, want, atol=1e-4, rtol=1e-4)


def test_padding_columns_are_cut_and_outputs_stay_the_same():
    ids = torch.tensor([[2, 7, 9, 3, 0, 0, 0], [2, 5, 3, 0, 0, 0, 0]])
    parts = {"inputs": {"input_ids": ids, "attention_mask": (ids > 0).long(), "token_type_ids": torch.zeros_like(ids)},
             "labels": torch.tensor([1, 0]),
             "teacher_inputs": {"input_ids": ids[:, :5], "attention_mask": (ids[:, :5] > 0).long()}}
    cut = trim_padding(parts)
    assert cut["inputs"]["input_ids"].tolist() == [[2, 7, 9, 3], [2, 5, 3, 0]]
    assert cut["inputs"]["token_type_ids"].shape == (2, 4) and cut["teacher_inputs"]["input_ids"].shape == (2, 4)
    assert cut["labels"] is parts["labels"]
    lm = {"inputs": parts["inputs"], "labels": ids}  # per-token labels: aligned with the columns, left whole
    assert trim_padding(lm)["inputs"]["input_ids"].shape == (2, 7)
    left = {"inputs": {"input_ids": ids.flip(1), "attention_mask": (ids.flip(1) > 0).long()}}  # left padding
    assert trim_padding(left)["inputs"]["input_ids"].shape == (2, 7)

    torch.manual_seed(0)
    student = MODELS.get("bilstm_classifier")(vocab_size=10, num_classes=2, embed_dim=8, hidden=8, fc_dim=8)
    teacher = MODELS.get("hf_bert_classifier")(num_classes=2, vocab_size=10, hidden_size=16, num_layers=1, num_heads=2)
    widths = []
    teacher.bert.embeddings.word_embeddings.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[1]))
    distiller = Distiller(student, teacher, {"logit_mse": Term(LOSSES.get("logit_mse")())})
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": torch.tensor([1, 0])}
    out = distiller(batch)
    assert widths == [4]
    with torch.no_grad():
        mask = (ids > 0).long()
        whole = torch.nn.functional.mse_loss(student(ids, mask), teacher.eval()(input_ids=ids, attention_mask=mask).logits)
    assert torch.allclose(out["logit_mse"], whole, atol=1e-5)  # the cut columns changed nothing
