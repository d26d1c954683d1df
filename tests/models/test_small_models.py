"""The small models' options: the MLP's input dropout (Hinton et al. 2015's MNIST teacher)."""

import torch

from distil.models import MODELS


def mlp(**kw):
    torch.manual_seed(0)
    return MODELS.get("mlp")(input_shape=[1, 28, 28], num_classes=10, hidden=[20], **kw)


def test_input_dropout_drops_pixels_in_training_only():
    x = torch.rand(4, 1, 28, 28)
    net = mlp(input_dropout=1.0)  # every pixel dropped: all inputs look alike
    net.train()
    out = net(x)
    torch.testing.assert_close(out, out[:1].expand_as(out))
    net.eval()
    assert not torch.allclose(net(x)[0], net(x)[1])
    torch.testing.assert_close(net(x), mlp()(x))  # same weights, and no dropping at test time


def test_input_dropout_keeps_the_weight_names():
    assert mlp(input_dropout=0.2).state_dict().keys() == mlp().state_dict().keys()
