import copy
import logging
import platform
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tumortrace.cam import gradcam_reference, predict_with_cam
from tumortrace.checkpoint import load_model
from tumortrace.efficientnet_lite import SameConv2d
from tumortrace import fusion, scripted
from tumortrace.fusion import SymmetricSameConv2d, fused_for_inference, is_scripted
from tumortrace.models import ARCHS, TumorClassifier
from tumortrace.preprocess import model_input
from tumortrace.images import load_image
from tumortrace.registry import model_folders

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = model_folders(ROOT / "weights")


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    torch.manual_seed(0)
    m = TumorClassifier(arch=request.param, image_size=96)
    _randomise_batchnorm(m, 1)
    return m.eval()


@pytest.mark.parametrize("hw", [(96, 96), (97, 131), (64, 80)])
def test_folded_model_computes_the_same_function(model, hw):
    """Computed in float64, folded and unfolded outputs are identical once rounded to the float32 that
    predict_with_cam returns (any misplaced scale or shift would show); in float32 the probabilities agree
    to 1e-5, while a random EfficientNet-B0's CAM can move by ~3e-4 after min-max scaling from float32
    rounding alone (the shipped models' CAMs: within 1e-4, tested below)."""
    fused = fused_for_inference(model, torchscript=False)
    assert fused is not model and not is_scripted(fused)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules()), "a BatchNorm was left unfolded"
    torch.manual_seed(sum(hw))
    x = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        assert (model(x).softmax(1) - fused(x).softmax(1)).abs().max() <= 1e-5
    model64 = copy.deepcopy(model).double()
    fused64 = fused_for_inference(model64, torchscript=False)
    assert fused64 is not model64
    for i in range(2):
        p_want, cam_want = predict_with_cam(model64, x[i:i + 1].double())
        p_got, cam_got = predict_with_cam(fused64, x[i:i + 1].double())
        assert np.abs(p_want - p_got).max() <= 1e-9
        assert np.abs(cam_want - cam_got).max() <= 1e-9


def test_original_model_is_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused_for_inference(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_grad_cam_still_runs_on_the_served_model(model):
    """grad-cam needs gradients and hooks: on the served model it gets the eager (folded) trunk."""
    fused = fused_for_inference(model)
    assert is_scripted(fused)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    _, cam_ref = gradcam_reference(fused, x)
    _, cam_fast = predict_with_cam(fused, x)
    # The fast CAM runs oneDNN's fused kernels, which sum in another order: a random EfficientNet-B0's CAM
    # moves by up to ~3e-4 from float32 rounding alone (first test; 1.5e-4 here). Shipped models: 1e-4, below.
    assert np.abs(cam_ref - cam_fast).max() <= (3e-4 if model.arch == "efficientnet_b0" else 1e-4)


def test_lite0_symmetric_padding_moves_into_the_convolution():
    m = TumorClassifier(arch="efficientnet_lite0", image_size=96).eval()
    fused = fused_for_inference(m)
    swapped = [c for c in fused.modules() if isinstance(c, SymmetricSameConv2d)]
    # stride-1 k×k convolutions pad symmetrically; stride-2 ones on even sizes do not (TensorFlow SAME)
    assert swapped and all(c.stride == (1, 1) for c in swapped)
    assert all(c.padding == ((c.weight.shape[-2] - 1) // 2, (c.weight.shape[-1] - 1) // 2) for c in swapped)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval-mode"):
        fused_for_inference(TumorClassifier(arch="resnet18").train())


class _MisorderedNet(nn.Module):
    """Registers a BatchNorm after a convolution it does not follow in forward: folding it would be wrong."""

    image_size = 32

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.classifier = nn.Linear(8, 2)

    def features(self, x):
        return self.bn(self.conv(self.stem(x)))

    def head(self, f):
        return self.classifier(f.mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.features(x))


def test_a_fold_that_changes_outputs_keeps_the_model_unfused(caplog):
    net = _MisorderedNet()
    _randomise_batchnorm(net, 2)
    net.eval()
    with caplog.at_level(logging.WARNING, logger="tumortrace.fusion"):
        assert fused_for_inference(net) is net
    assert "serving it unfused" in caplog.text


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_models_fold_within_tolerance_on_a_real_slice(folder):
    trained = load_model(folder)
    served = load_model(folder, for_inference=True)
    assert served.folded and served.scripted and not trained.folded and not trained.scripted
    m = trained.model
    for example in sorted((ROOT / "examples").glob("*.png"))[:2]:
        x = model_input(load_image(example).pixels, m.image_size, m.mean, m.std)
        p_want, cam_want = predict_with_cam(m, x)
        p_got, cam_got = predict_with_cam(served.model, x)
        assert np.abs(p_want - p_got).max() <= 1e-4
        assert np.abs(cam_want - cam_got).max() <= 1e-4


def test_same_conv_falls_back_for_another_input_size():
    conv = SameConv2d(4, 4, 3, groups=4, bias=False).eval()
    wrapped = SymmetricSameConv2d(conv, (1, 1))
    for hw in [(10, 10), (9, 14)]:
        x = torch.randn(1, 4, *hw)
        assert torch.allclose(wrapped(x), conv(x), atol=1e-6)
    strided = SameConv2d(4, 4, 3, stride=2, bias=False).eval()
    wrapped = SymmetricSameConv2d(strided, (1, 1))  # symmetric for odd sizes, not for even ones
    for hw in [(9, 9), (10, 10)]:
        x = torch.randn(1, 4, *hw)
        assert wrapped(x).shape == strided(x).shape and torch.allclose(wrapped(x), strided(x), atol=1e-6)


def test_registry_folds_by_default_and_not_when_asked(trained_model):
    from tumortrace.registry import build_registry

    folded = build_registry(str(trained_model)).get(trained_model.name)
    as_trained = build_registry(str(trained_model), fold_batchnorm=False).get(trained_model.name)
    eager = build_registry(str(trained_model), torchscript=False).get(trained_model.name)
    assert folded.folded and folded.scripted and not as_trained.folded and not as_trained.scripted
    assert eager.folded and not eager.scripted
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in as_trained.model.modules())


def test_app_option_turns_folding_off():
    import app

    assert app.get_args_parser().parse_args([]).fold_batchnorm is True
    assert app.get_args_parser().parse_args(["--no-fold-batchnorm"]).fold_batchnorm is False
    assert app.get_args_parser().parse_args([]).torchscript is True
    assert app.get_args_parser().parse_args(["--no-torchscript"]).torchscript is False


class _Spy(nn.Module):
    def __init__(self, inner, calls: list, scale: float = 1.0):
        super().__init__()
        self.inner, self.calls, self.scale = inner, calls, scale

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.inner(x) * self.scale


def test_the_apps_input_takes_the_torchscript_trunk_and_anything_else_the_eager_one(model):
    served = fused_for_inference(model)
    calls = []
    served.features.scripted = _Spy(served.features.scripted, calls)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    p_want, cam_want = predict_with_cam(model, x)
    p_got, cam_got = predict_with_cam(served, x)
    assert calls == [(1, 3, 96, 96)]
    # A random EfficientNet-B0's CAM moves by ~3e-4 from float32 rounding alone (see above); shipped: 1e-4.
    assert np.abs(p_want - p_got).max() <= 1e-4 and np.abs(cam_want - cam_got).max() <= 1e-3
    with torch.inference_mode():
        served.features(torch.randn(2, 3, 96, 96))  # a batch
        served.features(torch.randn(1, 3, 64, 80))  # another size: the trace's padding would be wrong
    with torch.enable_grad():
        assert served.features(x.clone().requires_grad_()).requires_grad  # a backward pass is possible
    assert calls == [(1, 3, 96, 96)]  # only the app's 1×3×S×S input


def test_without_torchscript_the_folded_eager_trunk_is_served(model, monkeypatch, caplog):
    def unavailable(trunk, example):
        raise RuntimeError("torch.jit is gone")

    monkeypatch.setattr(fusion, "script_trunk", unavailable)
    with caplog.at_level(logging.WARNING, logger="tumortrace.fusion"):
        served = fused_for_inference(model)
    assert served is not model and not is_scripted(served)
    assert "no TorchScript trunk (RuntimeError: torch.jit is gone); serving the eager trunk" in caplog.text


def test_a_torchscript_trunk_that_changes_outputs_is_not_served(model, monkeypatch, caplog):
    real = fusion.script_trunk

    def one_percent_off(trunk, example):
        served_trunk = real(trunk, example)
        served_trunk.scripted = _Spy(served_trunk.scripted, [], scale=1.01)
        return served_trunk

    monkeypatch.setattr(fusion, "script_trunk", one_percent_off)
    with caplog.at_level(logging.WARNING, logger="tumortrace.fusion"):
        served = fused_for_inference(model)
    assert not is_scripted(served) and "the TorchScript trunk changed" in caplog.text
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        # The eager trunk left serving has channels-last weights (script_trunk): the same sums in another
        # order, ~2e-5 relative; the refused copy was 1e-2 off.
        got, want = served.features(x), fused_for_inference(model, torchscript=False).features(x)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="PyTorch ships its oneDNN Graph fuser in x86-64 builds; elsewhere the fallback below serves")
def test_the_trunk_is_fused_by_onednn_graph_and_the_switch_is_put_back(model):
    """On this platform's torch (x86-64 Linux wheel) the oneDNN Graph fuser takes the trunk; the fuser's
    process-wide switch is on only while a trunk is built, so nothing else in the process is fused."""
    before = torch.jit.onednn_fusion_enabled()
    served = fused_for_inference(model)
    assert torch.jit.onednn_fusion_enabled() == before
    assert is_scripted(served) and served.features.optimisation == "oneDNN Graph fusion"
    assert served.features.fused_partitions > 0
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    assert scripted.fused_groups(served.features.scripted, x) > 0
    with torch.inference_mode():  # the plan fused while the switch was on is the one that runs after it
        assert (served.features(x) - fused_for_inference(model, torchscript=False).features(x)).abs().max() <= 1e-4


def test_where_nothing_is_fused_the_trunk_is_optimised_for_inference(model, monkeypatch, caplog):
    monkeypatch.setattr(scripted, "fused_groups", lambda module, example: 0)  # a torch build without the fuser
    with caplog.at_level(logging.INFO, logger="tumortrace.fusion"):
        served = fused_for_inference(model)
    assert is_scripted(served) and served.features.optimisation == "optimize_for_inference"
    assert "inputs, optimize_for_inference: " in caplog.text and "(probabilities within" in caplog.text
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        assert (served.features(x) - fused_for_inference(model, torchscript=False).features(x)).abs().max() <= 1e-4


def test_the_trunk_records_its_threads_and_says_once_when_asked_for_others(model, caplog):
    """Run at another thread count than it was built for it gains nothing and can be much slower (timed in
    benchmarks/HISTORY.md), so a caller asking for another is told once, in the log; the answer is the same."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        trunk = fused_for_inference(model).features
        assert trunk.threads == 1 and trunk.description.endswith(", 1 torch thread")
        x = torch.randn(trunk.shape, generator=torch.Generator().manual_seed(9))
        with caplog.at_level(logging.WARNING, logger="tumortrace.scripted"), torch.inference_mode():
            same = trunk(x)
            assert "built for" not in caplog.text
            torch.set_num_threads(2)
            other = [trunk(x) for _ in range(3)]
        assert caplog.text.count("built for 1 torch thread(s) and this thread asks for 2") == 1
        assert all(torch.equal(o, same) for o in other)
    finally:
        torch.set_num_threads(before)


def test_the_frozen_trunk_gets_channels_last_inputs_and_answers_as_the_eager_one(model):
    """The trunk is traced in channels-last format (oneDNN's own; Lite0 0.75× the time, benchmarks/HISTORY.md):
    an ordinary NCHW input is converted on its way to the frozen copy, and the answer does not change."""
    from torch import nn

    trunk = fused_for_inference(model).features
    assert trunk.memory_format == torch.channels_last and ", channels-last, " in trunk.description

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.formats = inner, []

        def forward(self, x):
            self.formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
            return self.inner(x)

    frozen = trunk.scripted
    trunk.scripted = Recording(frozen)
    try:
        x = torch.randn(trunk.shape, generator=torch.Generator().manual_seed(10))
        assert x.is_contiguous()
        with torch.inference_mode():
            served, eager = trunk(x), trunk.eager(x)
        assert trunk.scripted.formats == [True]
        assert (served - eager).abs().max() <= 1e-4 * eager.abs().max()
        with torch.inference_mode():  # and the model's answer is the one of the unfused model
            want, got = model.head(model.features(x)).softmax(1), model.head(served).softmax(1)
        assert (want - got).abs().max() <= 1e-4
    finally:
        trunk.scripted = frozen


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_concurrent_predictions_on_the_torchscript_trunk_get_their_own_answers(shipped):
    """The app runs two predictions at once on threads, on one shared served model (each shipped
    architecture: the fuser makes different partitions for each)."""
    import threading

    served = load_model(shipped, for_inference=True).model
    assert is_scripted(served)
    size = served.image_size
    inputs = [torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    alone = [predict_with_cam(served, x) for x in inputs]
    wrong = []

    def worker(k: int) -> None:
        for i in range(12):
            j = (i * 5 + k) % len(inputs)
            p, cam = predict_with_cam(served, inputs[j])
            if np.abs(p - alone[j][0]).max() > 1e-6 or np.abs(cam - alone[j][1]).max() > 1e-6:
                wrong.append((k, j))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_trunk_is_built_without_its_tracing_warnings_and_without_swapping_warning_filters(
        model, recwarn, warning_filters_left_alone):
    """Trunks are built on a background thread while requests are served (tumortrace/lone.py), so the
    warnings every trace gives (TracerWarning from this package's code, TorchScript's deprecation notices)
    are ignored by filters added to the process's list, not inside warnings.catch_warnings, which swaps the
    whole list and is not thread-safe; other warnings still show."""
    with warning_filters_left_alone():
        served = fused_for_inference(model)
    assert is_scripted(served)
    assert not [w for w in recwarn if issubclass(w.category, (torch.jit.TracerWarning, FutureWarning))], \
        [str(w.message) for w in recwarn]
    warnings.warn("a FutureWarning of someone else's", FutureWarning)
    warnings.warn_explicit("a TracerWarning of another package", torch.jit.TracerWarning, "elsewhere.py", 1,
                           module="elsewhere")
    assert [str(w.message) for w in recwarn] == ["a FutureWarning of someone else's",
                                                 "a TracerWarning of another package"]
