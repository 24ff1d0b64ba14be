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
