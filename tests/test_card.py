"""The model card's text: what a reviewer reads about how a model was trained."""
import pytest

from tumortrace.card import training_summary


def summary(**args) -> dict:
    base = {"opt": "adamw", "lr": None, "lr_scheduler": "cosine", "weight_decay": 1e-4, "batch_size": 32,
            "patience": 6, "balance": "weighted-loss", "augment_on": "cpu", "seed": 0}
    return {"epochs_run": 3, "best_epoch": 2, "monitor": "val_loss", "init": "random init", "args": {**base, **args}}


@pytest.mark.parametrize("args, stated", [
    ({}, "adamw, lr 0.0003 (cosine schedule), weight decay 0.0001"),
    ({"opt": "sgd", "lr_scheduler": "step"}, "sgd, lr 0.01 (step schedule)"),
    ({"lr": 1e-3, "weight_decay": 0.05}, "adamw, lr 0.001 (cosine schedule), weight decay 0.05"),
])
def test_card_states_the_learning_rate_training_used(args, stated):
    # --lr left at its default was written "lr default": the number has to be on the card
    text = training_summary(summary(**args))
    assert stated in text and "lr default" not in text


@pytest.mark.parametrize("args, device, stated", [
    # what train.py records now: the resolved place and the device
    ({"augment_on": "gpu", "amp": "bf16"}, "NVIDIA H100 80GB HBM3 (CUDA)",
     "augmentation on the GPU (tumortrace.gpu_augment), seed 0; trained on NVIDIA H100 80GB HBM3 (CUDA), "
     "bf16 autocast"),
    ({"augment_on": "cpu", "amp": "off"}, "NVIDIA A10G (CUDA)",
     "augmentation on the CPU (loader workers), seed 0; trained on NVIDIA A10G (CUDA), fp32"),
    ({"augment_on": "cpu", "amp": "bf16"}, "CPU (x86_64, 2 threads)",
     "augmentation on the CPU (loader workers), seed 0; trained on CPU (x86_64, 2 threads), fp32"),
    # older histories kept "auto": the device says what it meant
    ({"augment_on": "auto", "amp": "bf16"}, "NVIDIA H100 (CUDA)",
     "augmentation on the GPU (tumortrace.gpu_augment), seed 0; trained on NVIDIA H100 (CUDA), bf16 autocast"),
    ({"augment_on": "auto"}, "CPU (x86_64, 2 cores)", "augmentation on the CPU (loader workers)"),
    # and where the device is unknown, the card does not guess
    ({"augment_on": "auto", "amp": "bf16"}, None, "augmentation on the GPU if trained with CUDA, else the CPU"),
])
def test_card_states_where_and_in_what_precision_a_model_trained(args, device, stated):
    s = summary(**args)
    if device:
        s["device"] = device
    text = training_summary(s)
    assert stated in text
    assert ("trained on" in text) == bool(device)
    assert ("bf16" in text) == ("bf16 autocast" in stated)


def test_card_says_when_the_device_was_recorded_after_training():
    s = {**summary(augment_on="auto"), "device": "CPU (x86_64, 2 cores)",
         "device_source": "recorded after training, from commit abb086a"}
    assert training_summary(s).endswith("trained on CPU (x86_64, 2 cores), fp32 (device recorded after training, "
                                        "from commit abb086a)")


def test_shipped_cards_carry_the_calibration_of_their_own_test_probabilities():
    """The card's calibration section is rendered from evaluation.json's per-image test probabilities, and the
    shipped cards are what `python -m tumortrace.card` writes from their files today."""
    import json
    from pathlib import Path

    from tumortrace.card import render, training_summary as summary_text

    for folder in sorted((Path(__file__).resolve().parents[1] / "weights").iterdir()):
        if not (folder / "evaluation.json").is_file():
            continue
        evaluation = json.loads((folder / "evaluation.json").read_text())
        card = (folder / "README.md").read_text()
        section = card.split("## Calibration of P(malignant) (test split)\n", 1)[1].split("\n## ", 1)[0]
        assert f"Brier score **{evaluation['calibration']['brier']:.3f}**" in section
        assert sum(b["n"] for b in evaluation["calibration"]["bins"]) == evaluation["n_images"]
        assert section.count("\n| 0.") == len(evaluation["calibration"]["bins"])
        config = json.loads((folder / "config.json").read_text())
        history = json.loads((folder / "history.json").read_text())["summary"]
        rendered = render(config, evaluation, {"text": summary_text(history)}, "")
        assert rendered.split("## Data")[0] == card.split("## Data")[0]
