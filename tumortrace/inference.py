"""One image file → probabilities, decision and CAM, with the model's own preprocessing.

Shared by ``python -m tumortrace.predict`` and the app, so neither holds model logic of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import CLASSES
from .cam import compute
from .checkpoint import LoadedModel
from .images import LoadedImage, load_image
from .preprocess import model_input, to_rgb_float

@dataclass
class Prediction:
    probabilities: dict[str, float]  # {"benign": p, "malignant": p}
    decision: str  # class at the model's validated threshold
    threshold: float
    cam: np.ndarray  # S×S in [0, 1], for the malignant class
    cam_method: str
    image: LoadedImage

    @property
    def p_malignant(self) -> float:
        return self.probabilities["malignant"]

def predict_image(loaded: LoadedModel, image: LoadedImage, cam_method: str = "fast-cam") -> Prediction:
    model = loaded.model
    x = model_input(image.pixels, model.image_size, model.mean, model.std)
    probs, cam = compute(model, x, cam_method)
    p = {c: float(v) for c, v in zip(CLASSES, probs)}
    decision = CLASSES[1] if p["malignant"] >= model.threshold else CLASSES[0]
    return Prediction(p, decision, model.threshold, cam, cam_method, image)

def predict_file(loaded: LoadedModel, path, cam_method: str = "fast-cam") -> Prediction:
    return predict_image(loaded, load_image(path), cam_method)

def display_pixels(image: LoadedImage, max_side: int = 1024) -> np.ndarray:
    """The image as uint8 for display: H×W for grayscale (one channel: a third of the work), H×W×3 for
    colour; shrunk (aspect kept) so huge uploads stay cheap to show."""
    pixels = image.pixels if image.pixels.ndim == 2 else to_rgb_float(image.pixels)
    pixels = np.asarray(pixels, dtype=np.float32)
    h, w = pixels.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        import cv2
        pixels = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.uint8(np.clip(pixels, 0, 1) * 255 + 0.5)


def display_rgb(image: LoadedImage, max_side: int = 1024) -> np.ndarray:
    """As :func:`display_pixels`, always H×W×3 (grayscale replicated)."""
    shown = display_pixels(image, max_side)
    return shown if shown.ndim == 3 else np.repeat(shown[..., None], 3, axis=2)
