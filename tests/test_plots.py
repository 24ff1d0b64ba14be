"""The PNG plots shown in the app's Evaluation tab."""
import io

import numpy as np
import pytest
from PIL import Image

from tumortrace import plots


def history(n_epochs: int, first_loss: float) -> list[dict]:
    return [{"epoch": e, "train_loss": first_loss / e, "val_loss": 0.5 + 0.01 * e, "train_accuracy": 1 - 0.5 / e,
             "val_accuracy": 0.8, "val_auc": 0.9} for e in range(1, n_epochs + 1)]


@pytest.mark.parametrize("n_epochs, first_loss", [(1, 0.7), (15, 0.69), (80, 6.0)])
def test_training_curves_leave_the_top_corners_blank_for_gradios_label_and_buttons(n_epochs, first_loss):
    # In the app the image's label sits over its top-left corner and the fullscreen/download buttons over the
    # top-right one (about a tenth of the height, a fifth of the width at a 1280-pixel-wide window); the first
    # epochs' loss and the accuracy axis's top were hidden under them.
    png = io.BytesIO()
    plots.save(plots.curves_figure(history(n_epochs, first_loss)), png)
    gray = np.asarray(Image.open(png).convert("L"))
    h, w = gray.shape
    top = gray[: int(0.12 * h)]
    assert (top[:, : int(0.2 * w)] > 250).all() and (top[:, int(0.8 * w):] > 250).all()
    assert (gray[int(0.12 * h):] < 100).sum() > 1000  # and the plots are drawn below
