"""Burned-in marks on ultrasound slices: caliper crosses, their dotted lines, text. Find them, paint them out.

Marks are drawn in (near) white and narrow: dotted lines one pixel wide, caliper crosses and text up to
four. A white top-hat keeps what is narrower than its element and brighter than its surroundings: with a
3×3 element among bright pixels (the dotted lines), with 5×5 among near-saturated ones (crosses, text).
Tissue edges are wider and survive the opening; some thin bright specks of tissue are caught too (about
1% of a BUSI slice), and painting those out smooths them. Work at the slice's own resolution: after
resizing, marks are no longer narrow.
"""
from __future__ import annotations

import cv2
import numpy as np

# (top-hat element in px, least contrast above the opened image, least brightness), both of 255
PASSES = ((3, 50, 200), (5, 60, 230))
GROW_PX = 2  # the mask grows by this much so that anti-aliased edges go too


def detect_marks(gray: np.ndarray) -> np.ndarray:
    """Boolean H×W mask of thin bright marks. gray: H×W, uint8 or float in [0, 1]."""
    g = gray if gray.dtype == np.uint8 else np.uint8(np.clip(gray, 0, 1) * 255 + 0.5)
    mask = np.zeros(g.shape, np.uint8)
    for size, contrast, brightness in PASSES:
        tophat = cv2.morphologyEx(g, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
        mask |= ((tophat > contrast) & (g > brightness)).astype(np.uint8)
    return cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=GROW_PX).astype(bool)


def inpaint_marks(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pixels with the marks painted out, the mask). pixels: float32 [0, 1], H×W or H×W×3 (as load_image)."""
    rgb = pixels.ndim == 3
    u8 = np.uint8(np.clip(pixels, 0, 1) * 255 + 0.5)
    mask = detect_marks(u8.max(axis=2) if rgb else u8)  # coloured marks count by their brightest channel
    if not mask.any():
        return pixels, mask
    painted = cv2.inpaint(u8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    out = pixels.astype(np.float32, copy=True)
    out[mask] = painted[mask].astype(np.float32) / 255.0  # pixels off the marks keep their full depth
    return out, mask
