"""A frozen TorchScript copy of a classifier's convolutional trunk, for serving single slices on the CPU.

Why: in eager mode PyTorch runs 1×1 convolutions on one thread through im2col + GEMM with a copy each
(``_slow_conv2d_forward`` was 52% of a one-thread EfficientNet-Lite0 forward in ``torch.profiler``), and
applies ReLU6 and TensorFlow-"SAME" padding as passes of their own. The traced trunk is frozen and run with
PyTorch's oneDNN Graph fuser (``torch.jit.enable_onednn_fusion``), which hands whole runs of convolutions,
additions and activations to oneDNN as fused partitions: against ``optimize_for_inference`` (what this
module did before) a ResNet18 trunk takes 0.66–0.68× the time and a Lite0 one 0.76–0.99× (1 and 2 threads;
benchmarks/HISTORY.md). Where the fuser finds nothing to fuse (a torch build without it), the frozen trunk is
optimised with ``optimize_for_inference`` instead (oneDNN-packed weights, fused activations): Lite0 0.67–0.74×
and ResNet18 0.84–0.86× of eager. Both together crashed (``std::bad_alloc`` on ResNet18), so never both.

Why TorchScript although torch 2.14 marks it deprecated: ``torch.compile`` (inductor with freezing) gave
0.64× but compiles for ~27 s per model on 2 cores, needs a C++ compiler where the app runs, and is not
thread-safe (pytorch/pytorch#136833), while the app runs two predictions at once on threads. A frozen
TorchScript module is built in about a second, in memory, from the weights already verified and loaded.
Should ``torch.jit`` stop working, the trunk stays eager and the log says so.

The trace is specialised to what the app's preprocessing produces (one S×S image, no gradient);
anything else (``grad-cam``'s backward pass, other sizes, batches) runs the eager trunk it was made from.
The fuser's switch is process-wide: it is on only while the trunk is built and warmed up (the graph
executor fuses on the first runs and keeps that plan), and is restored afterwards.

The trunk is traced and served in channels-last (NHWC) memory format, its weights converted in place and
each input converted on the way in (a 1×3×S×S copy): oneDNN's kernels work in NHWC, and with NCHW tensors
between the fused partitions an EfficientNet-Lite0 trunk took 9.4 ms at 1 thread and 5.2 ms at 2, against
7.1 and 3.9 in channels-last (0.75×; ResNet18 11.8 and 5.3 either way; the same outputs to the last bit
here; benchmarks/HISTORY.md).

The trunk is built for the torch thread count in force while it is built (its kernels are compiled then).
Run at another count it gained nothing and was often much slower: a ResNet18 trunk built at 1 thread took
11.3 ms on a worker thread asking for 2 threads as for 1, and 19–29 ms (against 10) on the thread that built
it; built at 2 threads, 6.6–6.8 ms on a worker thread asking for 1, and 20–131 ms after switching back and
forth on the thread that built it (benchmarks/HISTORY.md). So the trunk records the count, names it in the
log, and says once when a thread asks for another: set the threads before loading, as the app and
``tumortrace.predict`` do.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

import torch
from torch import nn

log = logging.getLogger(__name__)


class ScriptedTrunk(nn.Module):
    """The eager trunk with a frozen TorchScript copy for the one input shape it was traced at."""

    memory_format = torch.channels_last  # the frozen copy's format: each input is converted to it

    def __init__(self, eager: nn.Module, scripted: torch.jit.ScriptModule, example: torch.Tensor,
                 optimisation: str = "", fused_partitions: int = 0):
        super().__init__()
        self.eager, self.scripted = eager, scripted
        self.optimisation, self.fused_partitions = optimisation, fused_partitions
        self.shape, self.dtype, self.device = tuple(example.shape), example.dtype, example.device
        self.threads = torch.get_num_threads()  # what its kernels were compiled for
        self._told_threads = False

    @property
    def description(self) -> str:
        """For the log, e.g. "oneDNN Graph fusion: 18 fused partitions, channels-last, 1 torch thread"."""
        parts = [f"{self.fused_partitions} fused partitions"] if self.fused_partitions else []
        parts += ["channels-last", f"{self.threads} torch thread{'s' if self.threads != 1 else ''}"]
        return f"{self.optimisation}: {', '.join(parts)}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.is_grad_enabled() or tuple(x.shape) != self.shape or x.dtype != self.dtype
                or x.device != self.device):
            return self.eager(x)
        if not self._told_threads and torch.get_num_threads() != self.threads:
            self._told_threads = True
            log.warning("the served trunk was built for %d torch thread(s) and this thread asks for %d, which "
                        "gains nothing and can be several times slower: set torch's threads before loading the "
                        "model", self.threads, torch.get_num_threads())
        return self.scripted(x.contiguous(memory_format=self.memory_format))


def script_trunk(trunk: nn.Module, example: torch.Tensor, onednn_graph: bool = True) -> ScriptedTrunk:
    """Trace ``trunk`` (eval mode) at ``example``'s shape in channels-last format, freeze it, and fuse it with
    oneDNN Graph (or, where nothing was fused or ``onednn_graph`` is False, optimise it for inference).
    ``optimisation`` on the result says which (and ``fused_partitions`` how many partitions the fuser made).
    ``trunk``'s own weights become channels-last too, in place (a copy would cost ~60 MiB for the two shipped
    models); it stays the eager path, its outputs the same within float rounding (~2e-5 relative).

    Raises whatever torch.jit raises; the caller decides what to serve instead."""
    trunk = trunk.to(memory_format=ScriptedTrunk.memory_format)
    example = example.contiguous(memory_format=ScriptedTrunk.memory_format)
    quiet_tracing()
    with torch.no_grad():
        if onednn_graph:
            scripted = _frozen(trunk, example)
            with onednn_fusion():
                _warm_up(scripted, example)
            groups = fused_groups(scripted, example)
            if groups:
                return ScriptedTrunk(trunk, scripted, example, "oneDNN Graph fusion", groups)
        scripted = torch.jit.optimize_for_inference(_frozen(trunk, example))
        _warm_up(scripted, example)
    return ScriptedTrunk(trunk, scripted, example, "optimize_for_inference")


def quiet_tracing() -> None:
    """Ignore, from now on, the warnings a trace of these trunks always gives: ``TracerWarning`` from this
    package's own code (the "SAME" padding sizes become constants, which is what the shape guard is for) and
    TorchScript's deprecation notices for the four calls made here (see the module's docstring; a caller's own
    use of those calls no longer shows them either).

    Added to the process's filter list, where they stay (adding one again moves it to the front), rather than
    set inside ``warnings.catch_warnings``: that replaces the whole list and puts its saved copy back on exit,
    which is not thread-safe, and trunks are built on a background thread while requests are served
    (tumortrace/lone.py). Interleaved with another thread doing the same, it could leave every warning of the
    process ignored, or drop another thread's filters."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"tumortrace\.")
    warnings.filterwarnings("ignore", r"`torch\.jit\.(trace|trace_method|freeze|optimize_for_inference)` "
                                      r"is deprecated", FutureWarning, r"torch\.jit\.")


def _frozen(trunk: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    return torch.jit.freeze(torch.jit.trace(trunk, example, check_trace=False).eval())


def _warm_up(scripted: torch.jit.ScriptModule, example: torch.Tensor) -> None:
    # The profiling executor profiles the first run and optimises (fuses, compiles the fused partitions) on the
    # second; the third is the first as served. Done here, not in a request.
    for _ in range(3):
        scripted(example)


@contextmanager
def onednn_fusion():
    """PyTorch's oneDNN Graph fuser switched on for the block, then back to what it was."""
    before = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


def fused_groups(scripted: torch.jit.ScriptModule, example: torch.Tensor) -> int:
    """How many oneDNN Graph partitions the executor's plan for ``example`` runs (0: nothing fused)."""
    return sum(node.kind() == "prim::oneDNNFusionGuard" for node in scripted.graph_for(example).nodes())
