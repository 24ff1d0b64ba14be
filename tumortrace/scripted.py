"""A frozen TorchScript copy of a classifier's convolutional trunk, for serving single slices on the CPU.

Why: in eager mode PyTorch runs 1×1 convolutions on one thread through im2col + GEMM with a copy each
(``_slow_conv2d_forward`` was 52% of a one-thread EfficientNet-Lite0 forward in ``torch.profiler``), and
applies ReLU6 and TensorFlow-"SAME" padding as passes of their own. ``torch.jit.freeze`` followed by
``optimize_for_inference`` pre-packs the weights for oneDNN and fuses the activations into the convolutions:
a Lite0 forward takes 0.67–0.74× the time, ResNet18 0.84–0.86× (1 and 2 threads; benchmarks/README.md).

Why TorchScript although torch 2.14 marks it deprecated: ``torch.compile`` (inductor with freezing) gave
0.64× but compiles for ~27 s per model on 2 cores, needs a C++ compiler where the app runs, and is not
thread-safe (pytorch/pytorch#136833), while the app runs two predictions at once on threads. A frozen
TorchScript module is built in about a second, in memory, from the weights already verified and loaded.
Should ``torch.jit`` stop working, the trunk stays eager and the log says so.

The trace is specialised to what the app's preprocessing produces (one S×S image, no gradient);
anything else (``grad-cam``'s backward pass, other sizes, batches) runs the eager trunk it was made from.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


class ScriptedTrunk(nn.Module):
    """The eager trunk with a frozen TorchScript copy for the one input shape it was traced at."""

    def __init__(self, eager: nn.Module, scripted: torch.jit.ScriptModule, example: torch.Tensor):
        super().__init__()
        self.eager, self.scripted = eager, scripted
        self.shape, self.dtype, self.device = tuple(example.shape), example.dtype, example.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or tuple(x.shape) != self.shape or x.dtype != self.dtype
                or x.device != self.device):
            return self.eager(x)
        return self.scripted(x)


def script_trunk(trunk: nn.Module, example: torch.Tensor) -> ScriptedTrunk:
    """Trace ``trunk`` (eval mode) at ``example``'s shape, freeze it and optimise it for inference.

    Raises whatever torch.jit raises; the caller decides what to serve instead."""
    with warnings.catch_warnings():
        # TracerWarning: the "SAME" padding sizes become constants, which is what the shape guard is for.
        # FutureWarning: TorchScript's deprecation notice (see the module's docstring).
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(trunk, example, check_trace=False)
            scripted = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            for _ in range(2):  # the profiling executor optimises on its first runs: do them here, not in a request
                scripted(example)
    return ScriptedTrunk(trunk, scripted, example)
