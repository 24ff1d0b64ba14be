"""tumortrace.lone: a prediction running alone on every core, with each served trunk rebuilt for that count."""
import logging
import threading

import numpy as np
import pytest
import torch

from conftest import ROOT
from tumortrace import lone as lone_module
from tumortrace.checkpoint import load
from tumortrace.images import load_image
from tumortrace.inference import predict_image
from tumortrace.lone import LonePredictions, reference_features

EXAMPLE = ROOT / "examples" / "busi_test_benign_116.png"


@pytest.fixture
def one_torch_thread():
    """The app's count on 2 cores (2 predictions at once), for the models loaded in the test; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_its_thread_runs_at_its_count_and_threads_started_later_at_the_callers(one_torch_thread):
    lone = LonePredictions(2)
    assert lone.run(torch.get_num_threads) == 2
    assert torch.get_num_threads() == 1
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # as a server worker, started after
    later.start()
    later.join()
    assert seen == [1]
    assert lone.run(torch.get_num_threads) == 2  # and the caller's count set back did not reach it


@pytest.mark.parametrize("name", ["efficientnet_lite0_busi", "resnet18_busi"])
def test_a_shipped_model_alone_gives_the_served_models_answers_and_serves_on_while_it_is_built(
        one_torch_thread, name):
    loaded = load(str(ROOT / "weights" / name), for_inference=True)
    assert loaded.model.features.threads == 1  # the served trunk, built for the app's count
    image = load_image(EXAMPLE)
    want = predict_image(loaded, image)
    lone = LonePredictions(2)
    building = lone.build({name: loaded})
    during = []
    while not building.done():  # requests keep being served on the served trunk meanwhile
        during.append(predict_image(loaded, image).p_malignant)
    building.result()
    assert during and set(during) == {want.p_malignant}
    wide = lone.model(name)
    assert wide is not None and wide.model.features is not loaded.model.features
    assert wide.model.features.threads == 2 and loaded.model.features.threads == 1
    assert wide.model.classifier is loaded.model.classifier  # one copy of everything but the trunk
    got = lone.run(predict_image, wide, image)
    assert got.probabilities == want.probabilities  # identical here, to the last bit
    np.testing.assert_array_equal(got.cam, want.cam)
    assert lone.model("another") is None


def test_a_rebuilt_trunk_whose_outputs_differ_is_not_used(one_torch_thread, monkeypatch, caplog):
    real = lone_module.script_trunk

    class OnePercentOff(torch.nn.Module):
        def __init__(self, trunk):
            super().__init__()
            self.trunk, self.description = trunk, trunk.description

        def forward(self, x):
            return self.trunk(x) * 1.01

    monkeypatch.setattr(lone_module, "script_trunk", lambda trunk, example: OnePercentOff(real(trunk, example)))
    loaded = load(str(ROOT / "weights" / "efficientnet_lite0_busi"), for_inference=True)
    lone = LonePredictions(2)
    with caplog.at_level(logging.WARNING, logger="tumortrace.lone"):
        lone.build({"lite0": loaded}).result()
    assert lone.model("lite0") is None
    assert "changed the features by 0.01" in caplog.text


def test_a_trunk_that_runs_at_any_count_is_used_as_it_is(one_torch_thread):
    """An eager trunk reads the calling thread's count on every call: nothing to rebuild."""
    loaded = load(str(ROOT / "weights" / "efficientnet_lite0_busi"), for_inference=True, torchscript=False)
    assert reference_features(loaded) is None
    lone = LonePredictions(2)
    lone.build({"lite0": loaded}).result()
    assert lone.model("lite0") is loaded


def test_a_trunk_that_cannot_be_rebuilt_leaves_its_model_to_run_as_any_other(one_torch_thread, monkeypatch, caplog):
    def unavailable(trunk, example):
        raise RuntimeError("torch.jit is unavailable")

    monkeypatch.setattr(lone_module, "script_trunk", unavailable)
    loaded = load(str(ROOT / "weights" / "resnet18_busi"), for_inference=True)
    lone = LonePredictions(2)
    with caplog.at_level(logging.ERROR, logger="tumortrace.lone"):
        lone.build({"resnet18": loaded}).result()  # does not raise
    assert lone.model("resnet18") is None
    assert "resnet18: no trunk for 2 torch threads" in caplog.text and "torch.jit is unavailable" in caplog.text
