"""Loading akamaster's CIFAR-10 ResNets: safe unpickling, prefix stripping, hash check, accuracy."""

import hashlib

import numpy as np
import pytest
import torch

from distil.errors import ConfigError, DistilError
from distil.models import MODELS
from distil.models.pretrained import (
    export_safetensors, load_akamaster, load_pretrained, read_state_dict,
)

AKAMASTER = "models/cifar10_resnet_akamaster"


def save_th(model, path, prefix="module."):
    """Write a file in akamaster's format: {'best_prec1', 'state_dict'} with DataParallel prefixes."""
    torch.save({"best_prec1": 90.0, "state_dict": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    return path


def with_hash_name(path, arch):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return path.rename(path.with_name(f"{arch}-{digest}.th"))


def test_loads_own_format_file_and_strips_prefix(tmp_path):
    source = MODELS.get("resnet20")(num_classes=10)
    path = with_hash_name(save_th(source, tmp_path / "x.th"), "resnet20")
    model = load_akamaster(path)
    assert not model.training
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_name_lookup_in_root_and_registry(tmp_path):
    path = with_hash_name(save_th(MODELS.get("resnet32")(num_classes=10), tmp_path / "x.th"), "resnet32")
    model = load_pretrained("akamaster_resnet32", root=tmp_path)
    assert len(model.layer1) == 5
    out = export_safetensors("akamaster_resnet32", tmp_path / "out" / "t.safetensors", root=tmp_path)
    from safetensors.torch import load_file
    assert torch.equal(load_file(out)["linear.weight"], read_state_dict(path)["linear.weight"])


class Payload:
    """Unpickling this creates a file: stands in for arbitrary code in a hostile checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refuses_files_that_need_unpickling_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "resnet20.th"
    torch.save({"state_dict": {}, "extra": Payload(marker)}, path)
    with pytest.raises(DistilError, match="refusing"):
        load_akamaster(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what a plain torch.load would have done
    assert marker.exists()


def test_hash_mismatch_and_wrong_architecture(tmp_path):
    bad_hash = save_th(MODELS.get("resnet20")(num_classes=10), tmp_path / "resnet20-deadbeef.th")
    with pytest.raises(DistilError, match="SHA-256"):
        load_akamaster(bad_hash)
    wrong = save_th(MODELS.get("resnet32")(num_classes=10), tmp_path / "resnet20.th")
    with pytest.raises(DistilError, match="does not fit resnet20"):
        load_akamaster(wrong)


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(DistilError, match="not found") as e:
        load_akamaster(tmp_path / "resnet20.th")
    assert "\n" not in str(e.value)
    with pytest.raises(DistilError, match="DISTIL_AKAMASTER_DIR"):
        load_akamaster("resnet44", root=tmp_path)
    with pytest.raises(DistilError, match="architecture"):
        load_akamaster(save_th(MODELS.get("resnet20")(num_classes=10), tmp_path / "weights.th"))
    with pytest.raises(ConfigError, match="akamaster_resnet20"):
        load_pretrained("akamaster_resnet21")


def test_all_shared_checkpoints_load(shared_dir):
    for arch in ("resnet20", "resnet32", "resnet44", "resnet56"):
        model = load_akamaster(arch, root=shared_dir / AKAMASTER)
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resnet20_accuracy_on_jpeg_cifar10(shared_dir):
    from distil.data.cifar import cifar10_jpeg

    test = cifar10_jpeg(root=shared_dir / "data/cifar10_jpeg", normalize="imagenet").test
    # The file is class-major, so its first 500 images are all airplanes: take the first 50 of
    # every class instead, a balanced 500-image sample.
    rows = np.concatenate([np.flatnonzero(test.labels == c)[:50] for c in range(10)])
    x = torch.stack([test[int(i)][0] for i in rows])
    y = torch.tensor([test[int(i)][1] for i in rows])
    model = load_akamaster("resnet20", root=shared_dir / AKAMASTER)
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.75  # README: 81.0% on the full JPEG test set (91.8% on clean CIFAR-10)
