"""Recipe mistakes `distil validate` must catch, each as one line naming the field or the file.

YAML that asks for code (tags), that explodes (aliases, nesting) or that PyYAML cannot turn into
values (a 5,000-digit number, month 13); numbers out of range; a teacher that `distil run` could
not load or train; models that do not fit the data.
"""

from pathlib import Path

import pytest
import yaml

from distil.build import build_data, check_recipe
from distil.checkpoint import save_weights
from distil.config import load_recipe, recipe_from_dict
from distil.yaml_reader import read_yaml
from distil.errors import ConfigError, DistilError
from distil.models import MODELS
from distil.pipeline import prepare_output_dir
from helpers import random_teacher, write_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def validate(path, *overrides):
    """What `distil validate` runs; the error message, or None when the recipe is accepted."""
    try:
        recipe = load_recipe(path, list(overrides))
        check_recipe(recipe, build_data(recipe))
    except DistilError as e:
        assert "\n" not in str(e), str(e)
        return str(e)
    return None


def digits(**fields):
    base = {"data": {"name": "digits"}, "student": {"model": "mlp", "params": {"hidden": [8]}},
            "losses": [{"name": "cross_entropy"}]}
    return recipe_from_dict(base | fields)


# ----- YAML -----

TAG = '!!python/object/apply:os.system ["echo pwned"]'


def test_a_yaml_tag_in_a_recipe_is_refused_naming_file_and_line(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    path.write_text(path.read_text() + f"x: {TAG}\n")
    message = validate(path)
    assert message.startswith(f"{path}: line ") and "the YAML tag !!python/object/apply:os.system is not allowed" in message


@pytest.mark.parametrize("tag", ["!!float", "!!binary", "!!set", "!custom", "!!timestamp"])
def test_every_explicit_tag_is_refused(tag, tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    path.write_text(path.read_text() + f"x: {tag} abc\n")
    assert "is not allowed" in validate(path)


def test_a_yaml_tag_in_a_set_value_names_the_item(tmp_path):
    message = validate(write_recipe(tmp_path / "r.yaml"), f"seed={TAG}")
    assert message.startswith("--set seed: ") and "is not allowed" in message


def test_a_yaml_tag_in_a_saved_recipe_on_resume_names_the_file(tmp_path):
    recipe = digits(output_dir=str(tmp_path / "run"))
    prepare_output_dir(recipe, resume=False, overwrite=False)
    saved = tmp_path / "run" / "recipe.yaml"
    saved.write_text(saved.read_text() + f"x: {TAG}\n")
    with pytest.raises(ConfigError) as e:
        prepare_output_dir(recipe, resume=True, overwrite=False)
    assert str(e.value).startswith(f"{saved}: line ") and "--overwrite" in str(e.value) and "\n" not in str(e.value)
    assert prepare_output_dir(recipe, resume=False, overwrite=True).is_dir()  # --overwrite still replaces it


def test_a_saved_recipe_that_is_not_a_mapping_is_one_line(tmp_path):
    recipe = digits(output_dir=str(tmp_path / "run"))
    prepare_output_dir(recipe, resume=False, overwrite=False)
    (tmp_path / "run" / "recipe.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="recipe.yaml: a saved recipe is a mapping of fields, got list"):
        prepare_output_dir(recipe, resume=True, overwrite=False)


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(digits().model_dump(mode="json")) + "x: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than 50 levels deep" in validate(path)


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")  # 9 ** 9 strings in about 420 bytes
    assert len(path.read_bytes()) < 500
    assert "more than 10000 values once its aliases are expanded" in validate(path)


def test_moderate_aliases_are_fine():
    assert read_yaml("a: &x [1, 2]\nb: *x\n", "r.yaml") == {"a": [1, 2], "b": [1, 2]}


def test_a_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="r.yaml: line 1, column 4: an alias refers to a collection that contains it"):
        read_yaml("a: &x [1, *x]\n", "r.yaml")


@pytest.mark.parametrize("value, problem", [
    ("9" * 5000, "a number of 5000 digits is too long"),
    ("2024-13-45", "'2024-13-45' is not a date (month must be in 1..12); quote it"),
    ("*nowhere", "not valid YAML: line 1, column 4: found undefined alias 'nowhere'"),
    ("[1, 2", "not valid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
])
def test_values_pyyaml_cannot_build_are_one_line(value, problem):
    with pytest.raises(ConfigError) as e:
        read_yaml(f"x: {value}\n", "r.yaml")
    assert str(e.value).startswith("r.yaml: ") and problem in str(e.value) and "\n" not in str(e.value)


def test_characters_yaml_forbids_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match=r"r.yaml: not valid YAML: unacceptable character #x0007"):
        read_yaml("seed: \x07\n", "r.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert validate(path) == f"{path}: not UTF-8 text (byte 9); a recipe is a YAML text file"


# ----- field values -----

@pytest.mark.parametrize("seed, problem", [(-1, "must be >= 0, got -1"), (2**32, "must be < 4294967296, got 4294967296")])
def test_seed_is_a_32_bit_unsigned_integer(seed, problem):
    with pytest.raises(ConfigError) as e:
        digits(seed=seed)
    assert str(e.value) == f"seed: {problem}"
    assert digits(seed=2**32 - 1).seed == 2**32 - 1


def test_infinite_weights_and_rates_are_refused():
    with pytest.raises(ConfigError, match=r"losses\[0\].weight: input should be a finite number, got inf"):
        digits(losses=[{"name": "cross_entropy", "weight": float("inf")}])
    with pytest.raises(ConfigError, match=r"optimizer.lr: input should be a finite number, got inf"):
        digits(optimizer={"lr": float("inf")})


def test_unknown_keys_are_named_whatever_they_look_like():
    with pytest.raises(ConfigError) as e:
        digits(Seed=1)  # once dropped from the path as if it were pydantic's name for a union branch
    assert str(e.value).startswith("Seed: unknown option; did you mean seed? (options: baseline, chain,")
    with pytest.raises(ConfigError, match=r"^\[' '\]: unknown option \(options: baseline, chain, .*update_order\)$"):
        digits(**{" ": 1})
    with pytest.raises(ConfigError, match=r"^recipe: keys should be strings, got None$"):
        recipe_from_dict({**digits().model_dump(), None: 1})


def test_huge_values_are_cut_in_the_message():
    with pytest.raises(ConfigError) as e:
        digits(epochs=list(range(10_000)))
    assert str(e.value).startswith("epochs: input should be a valid integer, got [0, 1, 2") and len(str(e.value)) < 200


@pytest.mark.parametrize("recipe, override, problem", [
    ("text/toy_bert_to_bilstm.yaml", "data.params.n_train=1000000000000",
     "data.params.n_train: must be <= 1000000, got 1000000000000"),
    ("text/toy_bert_to_bilstm.yaml", "data.params.augment.n_per_sentence=100000",
     "data.params.augment.n_per_sentence: must be <= 1000, got 100000"),
    ("lm/toy_gpt2_kd.yaml", "data.params.n_chars=1000000000000", "data.params.n_chars: must be <= 10000000, got 1000000000000"),
    ("lm/toy_gpt2_kd.yaml", "teacher.params.num_layers=1000000000", "teacher.params.num_layers: must be <= 1024, got 1000000000"),
    ("text/toy_bert_to_bilstm.yaml", "data.params.seed=-5", "data.params.seed: must be >= 0, got -5"),
    ("digits_kd.yaml", "data.params.split_seed=4294967296", "data.params.split_seed: must be < 4294967296, got 4294967296"),
    ("text/toy_bert_to_bilstm.yaml", "student.params.embed_dim=1099511627776", "student.params: the model would have"),
])
def test_sizes_that_would_hang_validate_are_refused(recipe, override, problem):
    pytest.importorskip("transformers")
    message = validate(RECIPES / recipe, override)
    assert message is not None and message.startswith(problem), message


# ----- models and teachers -----

def test_model_sizes_beyond_reason_are_refused_before_allocation(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    message = validate(path, "student.params.hidden=[1000000, 1000000]")
    assert message.startswith("student.params: the model would have 1,000,076,000,010 parameters, more than")
    assert validate(path, "student.params.hidden=[2000000]") == "student.params.hidden[0]: must be <= 1048576, got 2000000"


def test_unknown_names_say_which_field_holds_them(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    assert validate(path, "student.model=resnt20").startswith("student.model: unknown model 'resnt20'; did you mean resnet20")
    assert validate(path, "data.name=digit").startswith("data.name: unknown data set 'digit'")
    assert validate(path, "losses[0].name=hinton").startswith("losses[0].name: unknown loss 'hinton'")


def test_a_teacher_needs_weights_a_package_or_epochs(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [16]}})
    assert validate(path) == "teacher: set checkpoint (trained weights), pretrained, or epochs (train it first)"
    path = write_recipe(tmp_path / "r.yaml", teacher=[{"model": "mlp", "epochs": 1}, {"model": "mlp"}])
    assert validate(path).startswith("teacher[1]: set checkpoint")


def test_a_teacher_to_train_is_built_with_its_params(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    assert validate(path, "teacher.params.hidden=[-4]") == "teacher.params.hidden[0]: must be > 0, got -4"
    assert validate(path, "teacher.params.widht=3") == \
        "teacher.params.widht: unknown option (options: dropout, hidden, input_dropout)"


def test_a_teacher_trained_with_another_class_count_is_refused(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    message = validate(path, "teacher.params.num_classes=5")
    assert message == "teacher predicts 5 outputs per sample but the data has 10 classes: set teacher.params.num_classes"


def test_a_teachers_own_data_is_built_and_checked(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    assert validate(path, "teacher.data_params.train_fraction=2") == "teacher.data_params.train_fraction: must be <= 1, got 2"
    assert validate(path, "teacher.data_params.shuffle=true") == \
        "teacher.data_params.shuffle: unknown option (options: jitter, layout, max_train, split_seed, train_fraction)"
    assert validate(path, "teacher.data_params.layout=image") is None  # the MLP teacher flattens images
    image_cnn = ["data.params.layout=image", "teacher.model=small_cnn", "teacher.params={}"]
    assert validate(path, *image_cnn) is None
    message = validate(path, *image_cnn, "teacher.data_params.layout=flat")  # then it trains on flat pixels
    assert message.startswith("teacher: cannot read the data's inputs of shape (64,)"), message


def test_a_teachers_data_must_have_the_students_classes(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(200, 4)), y=np.arange(200) % 3)
    path = write_recipe(tmp_path / "r.yaml", data={"name": "npz", "params": {"path": str(tmp_path / "d.npz")}})
    message = validate(path, "teacher.data_params.num_classes=5")
    assert message.startswith("teacher.data_params: the teacher's data has 5 outputs per sample, the student's 3")


def test_a_teacher_checkpoint_with_another_head_names_field_and_file(tmp_path):
    weights = random_teacher(tmp_path / "t5.safetensors", hidden=(64,), num_classes=5)
    path = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(weights)})
    message = validate(path)
    assert message.startswith(f"teacher.checkpoint: {weights} ") and "head" in message, message


def test_an_unknown_pretrained_teacher_is_named(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", teacher={"model": "resnet56", "pretrained": "akamaster_resnet57"})
    assert validate(path).startswith("teacher.pretrained: unknown pre-trained model 'akamaster_resnet57'; did you mean")


def test_input_shape_that_does_not_fit_the_data(tmp_path):
    path = write_recipe(tmp_path / "r.yaml")
    assert validate(path, "student.params.input_shape=[3, 32, 32]") == (
        "student.params.input_shape: the data's inputs have shape (64,), got [3, 32, 32]; leave it out to take the data's")
    message = validate(path, "student.model=resnet20", "student.params={}")
    assert message.startswith("student: cannot read the data's inputs of shape (64,)"), message


def test_a_checkpoint_teacher_is_still_accepted(tmp_path):
    weights = tmp_path / "t.safetensors"
    save_weights(MODELS.get("mlp")(input_shape=[64], num_classes=10, hidden=[64]), weights)
    path = write_recipe(tmp_path / "r.yaml", teacher={"model": "mlp", "params": {"hidden": [64]}, "checkpoint": str(weights)})
    assert validate(path) is None


def test_feature_losses_need_tapped_layers_that_exist(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", losses=[{"name": "fitnet"}])
    assert validate(path) == ("losses[0].student_layers: fitnet compares student features; name the layers to tap "
                              "(`distil inspect MODEL` lists them)")  # was a ValueError at the first training step
    tapped = write_recipe(tmp_path / "s.yaml", losses=[{"name": "fitnet", "student_layers": ["hidden.0"],
                                                        "teacher_layers": ["hiden.0"]}])
    assert validate(tapped).startswith("losses[0].teacher_layers: layer 'hiden.0' not found in MLP; closest: hidden.0")
    assert validate(tapped, "losses[0].teacher_layers=[hidden.0]") is None
