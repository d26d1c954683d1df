"""Federated distillation (FedDF): non-IID shards, weight averaging, rounds through the one Trainer."""

import json

import pytest
import torch
from torch import nn

from distil.build import build_data
from distil.checkpoint import load_weights
from distil.config import recipe_from_dict
from distil.errors import ConfigError
from distil.federated import average_weights, dirichlet_shards, split_federated
from distil.pipeline import run_recipe

BASE = {"data": {"name": "digits", "batch_size": 32},
        "student": {"model": "mlp", "params": {"hidden": [16]}},
        "federated": {"clients": 3, "rounds": 2, "local_epochs": 1, "alpha": 0.5, "public_share": 0.3},
        "losses": [{"name": "hinton_kd", "temperature": 1.0, "alpha": 0.0}], "epochs": 1}


def recipe(**fields):
    return recipe_from_dict(BASE | fields)


def test_shards_partition_the_rows_and_a_small_alpha_skews_the_classes():
    labels = torch.arange(1000) % 10
    for alpha in (0.05, 100.0):
        shards = dirichlet_shards(labels, 5, alpha, seed=0)
        rows = torch.cat(shards)
        assert sorted(rows.tolist()) == list(range(1000)) and min(len(s) for s in shards) > 0
    skewed = [len(labels[s].unique()) for s in dirichlet_shards(labels, 5, 0.05, seed=0)]
    even = [len(labels[s].unique()) for s in dirichlet_shards(labels, 5, 100.0, seed=0)]
    assert max(skewed) < 10 and min(even) == 10  # near-IID clients see every class, skewed ones few
    assert all(torch.equal(a, b) for a, b in zip(dirichlet_shards(labels, 5, 0.5, 3), dirichlet_shards(labels, 5, 0.5, 3)))


def test_fedavg_is_the_size_weighted_mean_of_the_weights():
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0]])), a.bias.fill_(0.0)
        b.weight.copy_(torch.tensor([[5.0, -2.0]])), b.bias.fill_(4.0)
    mean = average_weights([a, b], [1.0, 3.0])
    assert mean["weight"].tolist() == [[4.0, -1.0]] and mean["bias"].tolist() == [3.0]


def test_the_public_data_is_unlabelled_and_apart_from_the_clients():
    r = recipe()
    bundle = build_data(r)
    clients, public, pooled = split_federated(r, bundle)
    assert len(public) == round(0.3 * len(bundle.train)) and public.tensors[1].eq(-100).all()
    assert sum(len(c) for c in clients) == len(pooled) == len(bundle.train) - len(public)
    seen = {tuple(x.tolist()) for c in clients for x in c.tensors[0]}
    assert not any(tuple(x.tolist()) in seen for x in public.tensors[0][:50])  # digits has no duplicate images


def test_a_federated_run_trains_every_client_and_server_and_reports_them(tmp_path):
    result = run_recipe(recipe(baseline=True, output_dir=str(tmp_path / "run")), progress=False)
    for r in (1, 2):
        for stage in ("client-1", "client-2", "client-3", "server"):
            assert (tmp_path / "run" / "federated" / f"round-{r}" / stage / "done.json").is_file()
    assert set(result.metrics) == {"teacher", "baseline", "fedavg", "distilled", "client_mean"}
    rounds = json.loads((tmp_path / "run" / "federated" / "rounds.json").read_text())
    assert [x["round"] for x in rounds] == [1, 2] and all(0 <= x["val_global"] <= 1 for x in rounds)
    assert (tmp_path / "run" / "best" / "student.safetensors").is_file()  # what eval, report and export read


def test_fedavg_alone_makes_the_global_model_the_clients_average(tmp_path):
    run_recipe(recipe(federated=BASE["federated"] | {"fuse": "average", "rounds": 1}, output_dir=str(tmp_path / "r")),
               progress=False)
    from distil.build import build_model

    r = recipe()
    bundle = build_data(r)
    clients = [load_weights(build_model(r.student, bundle, "student"),
                            tmp_path / "r" / "federated" / "round-1" / f"client-{k}" / "best" / "student.safetensors")
               for k in (1, 2, 3)]
    sizes = [float(len(c)) for c in split_federated(r, bundle)[0]]
    expected = average_weights(clients, sizes)
    got = load_weights(build_model(r.student, bundle, "student"), tmp_path / "r" / "best" / "student.safetensors")
    for key, value in got.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert not (tmp_path / "r" / "federated" / "round-1" / "server").exists()


def test_federated_recipes_with_a_teacher_or_too_many_clients_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="^federated: the clients are the teachers"):
        run_recipe(recipe(teacher={"model": "mlp", "epochs": 1}, output_dir=str(tmp_path / "a")), progress=False)
    with pytest.raises(ConfigError, match="^federated.public_share: 0.999 of 997 training samples leaves"):
        run_recipe(recipe(federated=BASE["federated"] | {"public_share": 0.999}, output_dir=str(tmp_path / "b")),
                   progress=False)
