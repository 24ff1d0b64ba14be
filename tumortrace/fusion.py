"""An inference copy of a classifier with each BatchNorm folded into the convolution before it (and its
trunk frozen with TorchScript: tumortrace.scripted).

In eval mode a BatchNorm is a fixed per-channel affine map, so ``conv → bn`` equals one convolution with
rescaled weights and a bias; folding saves a full pass over every feature map (batch_norm was ~10% of the
server's forward time in a py-spy profile under load). TensorFlow-"SAME" convolutions whose padding is
symmetric for the input size get it as the convolution's own padding instead of a padded copy.

The original model is left untouched (training, evaluation and ``grad-cam`` keep using it as it is); the
copy is checked against it on a random input before it is used, and the unfused model is kept, with a
warning in the log, if they disagree.
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .efficientnet_lite import SameConv2d, same_padding
from .scripted import ScriptedTrunk, script_trunk

log = logging.getLogger(__name__)

FUSED_TOLERANCE = 1e-4  # on softmax probabilities and on feature maps relative to their scale


class SymmetricSameConv2d(nn.Module):
    """A ``SameConv2d`` for one input size whose "SAME" padding is symmetric: padding done by the conv."""

    def __init__(self, conv: SameConv2d, padding: tuple[int, int]):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.dilation, self.groups = conv.stride, conv.dilation, conv.groups
        self.padding = padding
        self.fallback = conv  # other input sizes: the general path (shares the same parameters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if same_padding(x.shape[-2:], self.weight.shape[-2:], self.stride) != (self.padding[0] * 2, self.padding[1] * 2):
            return self.fallback(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _fold_children(parent: nn.Module) -> int:
    """Fold every BatchNorm2d registered right after the Conv2d it normalises (the order of every shipped
    architecture's modules; the check in ``fused_for_inference`` catches an architecture where it is not)."""
    folded = 0
    names = list(parent._modules)
    for first, second in zip(names, names[1:]):
        conv, bn = parent._modules[first], parent._modules[second]
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels and bn.track_running_stats):
            parent._modules[first] = fuse_conv_bn_eval(conv, bn)
            parent._modules[second] = nn.Identity()
            folded += 1
    for child in parent.children():
        folded += _fold_children(child)
    return folded


def _static_padding(model: nn.Module, example: torch.Tensor) -> int:
    """Record each SameConv2d's input size on one forward; swap those with symmetric padding."""
    sizes, hooks = {}, []
    for module in model.modules():
        if isinstance(module, SameConv2d):
            hooks.append(module.register_forward_pre_hook(
                lambda m, args: sizes.__setitem__(m, tuple(args[0].shape[-2:]))))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, SameConv2d) and child in sizes:
                ph, pw = same_padding(sizes[child], child.weight.shape[-2:], child.stride)
                if ph % 2 == 0 and pw % 2 == 0:
                    parent._modules[name] = SymmetricSameConv2d(child, (ph // 2, pw // 2))
                    swapped += 1
    return swapped


def _output_errors(model: nn.Module, candidate: nn.Module, example: torch.Tensor) -> tuple[float, float]:
    """(max |Δ probability|, max |Δ feature| relative to the features' scale) of ``candidate`` vs ``model``."""
    with torch.inference_mode():
        want_feats, got_feats = model.features(example), candidate.features(example)
        want, got = model.head(want_feats).softmax(1), candidate.head(got_feats).softmax(1)
    return float((want - got).abs().max()), feature_error(want_feats, got_feats)


def feature_error(want: torch.Tensor, got: torch.Tensor) -> float:
    """max |Δ feature| of ``got`` against ``want``, relative to ``want``'s scale."""
    return float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))


def fused_for_inference(model: nn.Module, torchscript: bool = True) -> nn.Module:
    """A copy of an eval-mode classifier with BatchNorm folded and static padding, and (``torchscript``) its
    trunk frozen with TorchScript (tumortrace.scripted). Each step is checked against the original on a
    random input; a step whose outputs differ is logged and left out (the model itself when folding fails)."""
    if model.training:
        raise ValueError("fuse an eval-mode model: a training BatchNorm has no fixed affine map to fold")
    arch = getattr(model, "arch", type(model).__name__)
    size = getattr(model, "image_size", 224)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(next(model.parameters()).dtype)
    fused = copy.deepcopy(model)
    folded = _fold_children(fused)
    swapped = _static_padding(fused, example)
    prob_err, feat_err = _output_errors(model, fused, example)
    if prob_err > FUSED_TOLERANCE or feat_err > FUSED_TOLERANCE:
        log.warning("folding BatchNorm changed %s's outputs (probabilities by %.2g, features by %.2g relative): "
                    "serving it unfused", arch, prob_err, feat_err)
        return model
    log.info("%s: %d BatchNorm folded, %d convolutions padded in place (probabilities within %.1g)",
             arch, folded, swapped, prob_err)
    if torchscript:
        try:
            trunk = script_trunk(fused.features, example)
        except Exception as exc:  # torch.jit missing or unable to trace: the folded eager trunk is still fast
            log.warning("%s: no TorchScript trunk (%s: %s); serving the eager trunk", arch, type(exc).__name__, exc)
            return fused
        fused.features = trunk
        unseen = torch.randn(example.shape, generator=torch.Generator().manual_seed(1)).to(example.dtype)
        prob_err, feat_err = _output_errors(model, fused, unseen)  # not the input it was traced with
        if prob_err > FUSED_TOLERANCE or feat_err > FUSED_TOLERANCE:
            log.warning("the TorchScript trunk changed %s's outputs (probabilities by %.2g, features by %.2g "
                        "relative): serving the eager trunk", arch, prob_err, feat_err)
            fused.features = trunk.eager
        else:
            log.info("%s: TorchScript trunk frozen for %s inputs, %s (probabilities within %.1g)",
                     arch, "×".join(map(str, example.shape)), trunk.description, prob_err)
    return fused


def is_scripted(model: nn.Module) -> bool:
    return isinstance(getattr(model, "features", None), ScriptedTrunk)
