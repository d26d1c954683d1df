"""Text classification from recipes: the toy and SST-2 data sets, the Hugging Face BERT factories,
and `distil run` on the toy recipes (BERT -> BiLSTM on an augmented transfer set, BERT -> small BERT)."""

import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from distil.build import build_data, build_model, check_recipe
from distil.checkpoint import load_weights
from distil.cli.main import app
from distil.config import load_recipe, recipe_from_dict
from distil.data import DATASETS
from distil.data.text import TOY_SENTIMENT_VOCAB_SIZE, toy_sentences
from distil.errors import ConfigError, DistilError
from distil.evaluate import evaluate_model
from distil.models import MODELS
from distil.pipeline import run_recipe

pytest.importorskip("transformers")
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "text"


def test_toy_sentences_follow_their_labelling_rules():
    texts, labels = toy_sentences(400, seed=3)
    for text, y in zip(texts, labels):
        words = text.split()
        if "but" in words:  # the clause after "but" decides
            words = words[words.index("but"):]
        positive = any(w in ("great", "wonderful", "superb", "fun", "brilliant", "charming", "delightful",
                             "moving", "clever", "beautiful") for w in words)
        assert y == int(positive != ("not" in words)), text
    assert 0.35 < sum(labels) / len(labels) < 0.65


def test_toy_sentiment_items_and_fixed_vocabulary():
    bundle = DATASETS.get("toy_sentiment")(n_train=50, n_val=10, n_test=20)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (50, 10, 20)
    assert bundle.task == "classification" and bundle.num_outputs == 2
    assert bundle.model_kwargs == {"vocab_size": TOY_SENTIMENT_VOCAB_SIZE} == {"vocab_size": 50}
    item = bundle.train[0]
    assert set(item) == {"input_ids", "attention_mask", "labels"} and item["labels"].item() in (0, 1)
    widths = {len(bundle.train[i]["input_ids"]) for i in range(50)} | {len(bundle.test[i]["attention_mask"]) for i in range(20)}
    assert widths == {bundle.input_shape[0]}  # one padded width: the default collate stacks them
    other = DATASETS.get("toy_sentiment")(n_train=300, seed=5)  # other sizes and seed: same ids
    assert other.tokenizer.get_vocab() == bundle.tokenizer.get_vocab()
    assert int(bundle.train[0]["input_ids"].max()) < TOY_SENTIMENT_VOCAB_SIZE


def test_augmented_transfer_set_adds_unlabelled_rows_to_train_only():
    plain = DATASETS.get("toy_sentiment")(n_train=40, n_val=10, n_test=10)
    aug = DATASETS.get("toy_sentiment")(n_train=40, n_val=10, n_test=10, augment={"n_per_sentence": 3, "p_mask": 0.3})
    n = len(aug.train)
    assert 40 < n <= 40 + 3 * 40
    labels = torch.stack([aug.train[i]["labels"] for i in range(n)])
    assert torch.equal(labels[:40], torch.stack([plain.train[i]["labels"] for i in range(40)]))
    assert torch.all(labels[40:] == -100)
    mask_id = aug.tokenizer.token_to_id("[MASK]")
    assert any((aug.train[i]["input_ids"] == mask_id).any() for i in range(40, n))
    assert len(aug.val) == 10 and torch.equal(aug.test[3]["labels"], plain.test[3]["labels"])


def test_bad_data_params_name_the_field():
    raw = yaml_recipe("toy_bert_to_bilstm.yaml")
    raw["data"]["params"]["augment"] = {"n_per_sentence": 0}
    with pytest.raises(ConfigError, match=r"data.params.augment.n_per_sentence: must be > 0"):
        build_data(recipe_from_dict(raw))


def test_sst2_needs_its_folder(tmp_path):
    with pytest.raises(DistilError, match="sst2: .* lacks train.jsonl.gz.*set data.params.root"):
        DATASETS.get("sst2")(root=str(tmp_path))


def test_sst2_from_the_shared_folder(shared_dir):
    root = str(shared_dir / "data" / "sst2")
    small = DATASETS.get("sst2")(root=root, max_train=200, vocab_size=3000, max_length=32)
    assert (len(small.train), len(small.val), len(small.test)) == (200, 872, 1821)
    assert small.model_kwargs["vocab_size"] == 3000  # built from the whole training file
    other = DATASETS.get("sst2")(root=root, max_train=50, vocab_size=3000, max_length=32, seed=1)
    assert other.tokenizer.get_vocab() == small.tokenizer.get_vocab()  # max_train never changes ids
    assert small.input_shape[0] <= 32 and small.test[0]["labels"].item() in (0, 1)


def test_sst2_with_a_local_hugging_face_tokenizer(shared_dir, tmp_path):
    from transformers import PreTrainedTokenizerFast

    from distil.text import word_tokenizer

    fast = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(["a fine movie", "a dull film"]),
                                   pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    fast.save_pretrained(tmp_path / "tok")
    root = str(shared_dir / "data" / "sst2")
    bundle = DATASETS.get("sst2")(root=root, max_train=20, tokenizer=str(tmp_path / "tok"), student_tokenizer="teacher")
    assert bundle.model_kwargs["vocab_size"] == len(fast) == 10
    assert set(bundle.train[0]) == {"input_ids", "attention_mask", "labels"}
    assert int(bundle.test[0]["input_ids"][0]) == fast.convert_tokens_to_ids("[CLS]")
    pairs = DATASETS.get("sst2")(root=root, max_train=20, vocab_size=3000, tokenizer=str(tmp_path / "tok"))
    assert pairs.model_kwargs["vocab_size"] == 3000 and pairs.teacher_data.model_kwargs["vocab_size"] == 10
    assert torch.equal(pairs.test[0]["teacher_inputs"]["input_ids"], bundle.test[0]["input_ids"])
    with pytest.raises(DistilError, match="not a folder"):
        DATASETS.get("sst2")(root=str(shared_dir / "data" / "sst2"), tokenizer=str(tmp_path / "missing"))


def test_hf_bert_classifier_and_its_argument_checks():
    model = MODELS.get("hf_bert_classifier")(num_classes=3, vocab_size=50, hidden_size=32, num_layers=1)
    ids = torch.randint(0, 50, (2, 7))
    assert model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 3)
    assert sum(p.numel() for p in model.bert.encoder.parameters()) == 4 * 32 * 32 + 4 * 32 + 2 * 32 * 128 + 128 + 32 + 4 * 32
    with pytest.raises(ValueError, match="num_heads: must divide hidden_size=30, got 4"):
        MODELS.get("hf_bert_classifier")(num_classes=2, vocab_size=50, hidden_size=30, num_heads=4)


def test_hf_pretrained_reads_local_folders_only(tmp_path):
    import transformers

    model = MODELS.get("hf_bert_classifier")(num_classes=3, vocab_size=40, hidden_size=16, num_layers=1)
    model.save_pretrained(tmp_path / "cls")
    loaded = MODELS.get("hf_pretrained")(str(tmp_path / "cls"), num_classes=3).eval()
    ids = torch.randint(0, 40, (2, 5))
    assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    with pytest.raises(ValueError, match="predicts 3 classes but the data has 2"):
        MODELS.get("hf_pretrained")(str(tmp_path / "cls"), num_classes=2)
    transformers.BertModel(model.config).save_pretrained(tmp_path / "encoder")  # no head yet
    assert MODELS.get("hf_pretrained")(str(tmp_path / "encoder"), num_classes=5).config.num_labels == 5
    with pytest.raises(DistilError, match="never downloaded"):
        MODELS.get("hf_pretrained")("bert-base-uncased")


def yaml_recipe(name: str) -> dict:
    import yaml

    return yaml.safe_load((RECIPES / name).read_text())


@pytest.mark.parametrize("name", ["toy_bert_to_bilstm.yaml", "toy_bert_to_small_bert.yaml", "sst2_bert_to_bilstm.yaml"])
def test_text_recipes_validate_and_build(name, tmp_path):
    recipe = load_recipe(RECIPES / name, [f"output_dir={tmp_path}"])
    if recipe.data.name == "sst2":
        assert recipe.data.params["root"] == "../shared/data/sst2"
        return  # building it reads the shared folder (tested above)
    bundle = build_data(recipe)
    check_recipe(recipe, bundle)  # student and losses build; vocab_size comes from the data
    assert build_model(recipe.teachers[0], bundle, "teacher").config.vocab_size == 50


SHRINK = ["data.params.n_train=400", "data.params.n_test=200", "data.batch_size=16", "teacher.epochs=6", "epochs=4"]


def _agreement_of_untrained_student(recipe, bundle, teacher) -> float:
    set_seed(recipe.seed)  # the distilled student started from these very weights
    student = build_model(recipe.student, bundle, "student")
    metrics, _ = evaluate_model(student, DataLoader(bundle.test, batch_size=256), "classification", teacher=teacher)
    return metrics["agreement"]


def test_toy_recipe_leaves_a_gap_that_distillation_closes(tmp_path):
    """The recipe as shipped (about 40 s on one core): a student with 100 labels learns far less
    than the teacher trained on 1,000; the teacher's logits on the augmented copies close most of it."""
    recipe = load_recipe(RECIPES / "toy_bert_to_bilstm.yaml", [f"output_dir={tmp_path}"])
    result = run_recipe(recipe, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"teacher", "baseline", "distilled"}
    assert {"accuracy", "nll", "params", "latency_ms", "size_bytes"} <= set(saved["teacher"])
    assert {"accuracy", "agreement", "kl", "logit_diff", "params"} <= set(saved["distilled"])
    assert (tmp_path / "teacher" / "done.json").is_file()  # teacher stage ran first
    teacher_log = (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()
    assert len(teacher_log) == 10 and saved["teacher"]["accuracy"] > 0.95
    assert saved["baseline"]["accuracy"] < 0.85  # 100 labels are not enough on their own
    assert saved["distilled"]["accuracy"] > saved["baseline"]["accuracy"] + 0.15, saved
    assert result.metrics == saved


def test_cli_runs_bert_to_small_bert(tmp_path):
    args = SHRINK + ["epochs=6", "optimizer.lr=0.002", "teacher.params.hidden_size=64", "teacher.params.num_layers=2",
                     "student.params.hidden_size=32", "student.params.num_layers=1", f"output_dir={tmp_path}"]
    result = CliRunner().invoke(app, ["run", str(RECIPES / "toy_bert_to_small_bert.yaml"), "--no-progress",
                                      *[a for s in args for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["distilled"]["params"] < saved["teacher"]["params"] / 5
    recipe = load_recipe(tmp_path / "recipe.yaml")
    bundle = build_data(recipe)
    teacher = load_weights(build_model(recipe.teachers[0], bundle, "teacher"), tmp_path / "teacher" / "best" / "student.safetensors")
    before = _agreement_of_untrained_student(recipe, bundle, teacher)
    assert saved["distilled"]["agreement"] > before + 0.1, (before, saved["distilled"])
