"""Quantisation-aware distillation: the student trains with int8 simulated in its forward pass, so
it learns weights that survive the int8 export, while the float teacher teaches it as usual.

Fake quantisation (Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018): weights and activations are rounded to the int8
grid in the forward pass and the rounding is skipped in the backward pass (straight-through
estimator); batch norm is folded into the convolution before its weights are rounded, as the
exported network will have it. Distilling into such a student from a float teacher is Mishra &
Marr's "Apprentice" (ICLR 2018) and Polino et al.'s "quantized distillation" (ICLR 2018).

The scheme simulated is the one `distil export` writes (onnxruntime's static QDQ int8): int8
weights, symmetric per output channel; uint8 activations with a per-tensor range, here a moving
average of the batch min/max (`MovingAverageMinMaxObserver`). The fake-quant modules, observers and
fused conv-bn(-relu) modules are PyTorch's (`torch.ao.quantization`, eager mode; torchao, its
successor, fake-quantises linear and embedding layers only). What is observed differs from onnxruntime in two ways: the
export measures activation ranges again on calibration images rather than keeping the trained
ones, and functional ops (`F.relu`, residual additions) are not fake-quantised during training.
The student's outputs (the last layer's) stay float in training: rounded to a range that lags
behind growing logits, they would pass no gradient beyond it.

Start from a trained float student (`student.checkpoint`) and distil for a few epochs, as QAT is
usually run: from random weights the simulated rounding slows training.

A prepared student keeps its class and layer names (fused batch norms become `Identity`); its
observers learn ranges in training mode only, so evaluation never moves them. `float_model` gives
the float network to export: batch norm folded, every observer gone.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from distil.errors import DistilError
from distil.taps import calls_in_order

FUSABLE = ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
           (nn.Conv1d, nn.BatchNorm1d, nn.ReLU), (nn.Conv1d, nn.BatchNorm1d), (nn.Linear, nn.ReLU))


def _ao() -> Any:
    import torch.ao.quantization as ao

    return ao


def qconfig() -> Any:
    """onnxruntime's static int8 scheme: uint8 per-tensor activations, int8 symmetric per-channel weights."""
    ao = _ao()
    activation = ao.FakeQuantize.with_args(observer=ao.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                           dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = ao.FakeQuantize.with_args(observer=ao.MovingAveragePerChannelMinMaxObserver, quant_min=-128,
                                       quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return ao.QConfig(activation=activation, weight=weight)


def fusable_groups(model: nn.Module, example: Tensor) -> list[list[str]]:
    """Names of the (conv, batch norm[, relu]) and (linear, relu) runs of `model` where each module
    reads the previous one's output and runs once, found by running `example`: these fuse."""
    names = {m: n for n, m in model.named_modules()}
    calls = calls_in_order(model, example, [m for m in model.modules() if not list(m.children())])
    runs = {m: sum(1 for c in calls if c[0] is m) for m, _, _ in calls}
    groups, used = [], set()
    for i in range(len(calls)):
        for pattern in FUSABLE:
            chain = calls[i : i + len(pattern)]
            if (len(chain) == len(pattern) and all(type(c[0]) is t for c, t in zip(chain, pattern))
                    and all(b[1] is a[2] for a, b in zip(chain, chain[1:]))
                    and all(runs[c[0]] == 1 and c[0] not in used for c in chain)):
                groups.append([names[c[0]] for c in chain])
                used.update(c[0] for c in chain)
                break
    return groups


def _output_layer(model: nn.Module, example: Tensor) -> str:
    """The name of the last linear or convolutional layer to run: the one that writes the outputs."""
    calls = calls_in_order(model, example, [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))])
    if not calls:
        raise DistilError(f"qat: {type(model).__name__} has no linear or convolutional layer to quantise")
    return {m: n for n, m in model.named_modules()}[calls[-1][0]]


def _quantise_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quant(args[0]), *args[1:])


def _observe_in_training(module: nn.Module, args: tuple) -> None:
    """Observers follow the module's mode: ranges are learnt from training batches only."""
    if module._qat_observing != module.training:
        module.apply(_ao().enable_observer if module.training else _ao().disable_observer)
        module._qat_observing = module.training


def prepare_qat(model: nn.Module, example: Any) -> nn.Module:
    """`model`, in place, made quantisation-aware: fusable runs fused, inputs and layer outputs
    fake-quantised, Linear and Conv layers with fake-quantised weights. `example`: one batch."""
    if not isinstance(example, Tensor) or not example.is_floating_point():
        raise DistilError("qat: quantisation-aware training is for students that read one float tensor (images, "
                          f"features); this one reads {', '.join(example) if isinstance(example, dict) else type(example).__name__}")
    ao = _ao()
    was_training = model.training
    groups, last = fusable_groups(model.eval(), example), _output_layer(model, example)
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's notice that torchao succeeds it
        if groups:
            ao.fuse_modules_qat(model, groups, inplace=True)
        model.input_quant = ao.QuantStub()
        model.qconfig = qconfig()
        ao.prepare_qat(model, inplace=True)
    model.get_submodule(last).activation_post_process = nn.Identity()  # float outputs: see the module docstring
    model.register_forward_pre_hook(_quantise_input)
    model.register_forward_pre_hook(_observe_in_training, prepend=True)
    model._qat_observing = True
    with torch.no_grad():  # weight ranges from the start, so that evaluating before any step works
        for module in model.modules():
            if hasattr(module, "weight_fake_quant"):
                module.weight_fake_quant(_weight_as_rounded(module))
    return model.train(was_training)


def _weight_as_rounded(module: nn.Module) -> Tensor:
    """The weight a QAT layer rounds: a fused convolution's scaled by its batch norm, as in training."""
    bn = getattr(module, "bn", None)
    if bn is None:
        return module.weight
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return module.weight * scale.reshape(-1, *([1] * (module.weight.dim() - 1)))


def is_quantisation_aware(model: nn.Module) -> bool:
    return isinstance(getattr(model, "input_quant", None), _ao().QuantStub)


def float_model(model: nn.Module) -> nn.Module:
    """The float network a quantisation-aware `model` simulates, for export: fused batch norms
    folded into their convolutions (running statistics), fake quantisation and observers removed."""
    ao = _ao()
    out = copy.deepcopy(model).eval()
    for name, module in list(out.named_modules()):
        if name and hasattr(module, "to_float") and hasattr(module, "weight_fake_quant"):
            out.set_submodule(name, module.to_float().eval())
    from torch.ao.quantization.quantize import _remove_qconfig

    _remove_qconfig(out)  # observers, their hooks and the qconfigs, as torch.ao's own convert does
    for hook in [k for k, f in out._forward_pre_hooks.items() if f in (_quantise_input, _observe_in_training)]:
        del out._forward_pre_hooks[hook]
    del out.input_quant, out._qat_observing
    assert not any(isinstance(m, ao.FakeQuantizeBase) for m in out.modules())
    return out
