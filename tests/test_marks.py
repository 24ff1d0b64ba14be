"""Caliper/text mark detection and inpainting on synthetic ultrasound-like slices with drawn marks."""
import cv2
import numpy as np

from tumortrace.marks import detect_marks, inpaint_marks


def _speckle_slice(seed=0, size=(240, 320)):
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.uniform(40, 150, size).astype(np.float32), (0, 0), 2)
    cv2.ellipse(g, (160, 120), (50, 30), 0, 0, 360, 25, -1)  # a dark lesion
    cv2.line(g, (0, 40), (319, 60), 200, 6)  # a bright, wide tissue interface: not a mark
    return np.clip(g, 0, 255).astype(np.uint8)


def _draw_caliper(g, x, y, arm=5):
    cv2.line(g, (x - arm, y), (x + arm, y), 255, 1)
    cv2.line(g, (x, y - arm), (x, y + arm), 255, 1)


def test_calipers_and_text_are_found_and_wide_bright_tissue_is_not():
    g = _speckle_slice()
    clean = g.copy()
    for x, y in ((110, 120), (210, 120)):
        _draw_caliper(g, x, y)
    cv2.putText(g, "RT5", (20, 220), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    mask = detect_marks(g)
    drawn = (g.astype(int) - clean) > 60
    assert mask[drawn].mean() > 0.95  # nearly every drawn pixel is caught
    assert mask[35:65, 20:300].mean() < 0.05  # the 6-px tissue line is left alone
    assert mask.mean() < 0.05
    assert not detect_marks(clean)[80:200, 80:240].any()  # no marks near the lesion of the clean slice


def test_inpainting_removes_the_marks_and_keeps_everything_else():
    g = _speckle_slice(1)
    clean = g.copy()
    _draw_caliper(g, 110, 120)
    pixels = g.astype(np.float32) / 255
    painted, mask = inpaint_marks(pixels)
    cross = (g.astype(int) - clean) > 60
    assert painted[cross].max() < 200 / 255  # the white cross is gone
    assert np.abs(painted[cross] - clean[cross] / 255).mean() < 40 / 255  # filled with something tissue-like
    np.testing.assert_array_equal(painted[~mask], pixels[~mask])  # nothing else changes


def test_rgb_and_unmarked_slices():
    g = _speckle_slice(2)
    untouched, mask = inpaint_marks(g.astype(np.float32) / 255)
    assert not mask[80:200, 80:240].any()
    red = g.copy()
    _draw_caliper(red, 60, 60)
    rgb = np.stack([red, g, g], axis=2)  # a red-only caliper counts by its brightest channel
    _, rgb_mask = inpaint_marks(rgb.astype(np.float32) / 255)
    assert rgb_mask[55:66, 55:66].any()
