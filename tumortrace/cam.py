"""Class-activation maps for the malignant class.

For a head that is global-average-pooling then Linear, the Grad-CAM weight of channel k for class c is
d logit_c / d A_k averaged over positions = W[c, k] / (H·W): a positive constant times the head's weight.
So Grad-CAM of the last conv block equals the CAM Σ_k W[c,k]·A_k up to that constant, which min–max
normalisation removes. ``predict_with_cam`` gets probabilities and the map from one forward pass;
``gradcam_reference`` runs the ``grad-cam`` package (forward + backward), kept as the reference and the
fallback for other heads and methods.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from . import POSITIVE_INDEX
from .models import TumorClassifier

CAM_METHODS = ("fast-cam", "grad-cam")


def _scale_like_gradcam(cam: np.ndarray, size_wh: tuple[int, int] | None = None,
                        relu_in_place: bool = False) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image`` for one 2-D float32 map, the same arithmetic (tested bit-identical,
    near-zero and constant maps too): min–max to [0, 1] with its 1e-7 epsilon, then a bilinear resize. Its own
    copy, so that the app does not import grad-cam, which imports its every method and scikit-learn's
    decompositions (0.35 s of a cold start; ``gradcam_reference`` still imports it, when it is asked for).

    One ``minMaxLoc`` pass stands for its two reductions: rounding is monotonic, so the largest of the shifted
    values is the largest value shifted. Its divide happens in place, in float32 as NumPy 2 does for a Python
    float and a float32 scalar; the copies it makes are skipped. Right after a forward pass every call costs
    tens of microseconds, whatever its size: 0.20 → 0.18 ms for the map's post-processing (Lite0, 7×7 → 224²).

    ``relu_in_place``: grad-cam's ReLU before it, applied to ``cam`` itself and only when its minimum, from the
    same pass, is below 0 (a bilinear resize of values ≥ 0, as here, has none: its weights are ≥ 0).
    """
    low, high, _, _ = cv2.minMaxLoc(cam)
    if relu_in_place and low < 0:
        np.maximum(cam, 0, out=cam)
        low, high = 0.0, max(high, 0.0)
    low, high = np.float32(low), np.float32(high)
    cam = np.subtract(cam, low, dtype=np.float32)
    cam /= np.float32(1e-7) + (high - low)
    return cam if size_wh is None else cv2.resize(cam, size_wh)


def _normalise_like_gradcam(cam_lowres: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The exact post-processing of pytorch-grad-cam for one target layer (ReLU, scale+resize, ReLU, scale)."""
    scaled = _scale_like_gradcam(np.maximum(cam_lowres, 0, dtype=np.float32), size_wh)
    return _scale_like_gradcam(scaled, relu_in_place=True)  # ``scaled`` is this function's own


@torch.inference_mode()
def predict_with_cam(model: TumorClassifier, x: torch.Tensor, target: int = POSITIVE_INDEX):
    """One forward pass → (probabilities [benign, malignant], CAM at the input's size, in [0, 1]).

    The head (average pool, then the classifier; its dropout is off in eval) is applied to the image's
    activations as rows of channels (a view of the served trunk's channels-last output), as plain tensor
    calls: no module calls (``model.head``'s dropout and linear) and no einsum, whose parsing and permutes
    cost more than the work here. After a forward pass each call costs tens of microseconds: 0.46 → 0.32 ms
    for Lite0's head, map and post-processing, with the same bits as before for both shipped models on the
    shipped example.
    """
    if model.training:
        raise ValueError("predict_with_cam needs the model in eval mode (model.eval()): "
                         "the head's dropout is not applied")
    feats = model.features(x)
    _, channels, h, w = feats.shape
    rows = feats[0].permute(1, 2, 0).reshape(h * w, channels)
    weight, bias = model.classifier.weight, model.classifier.bias
    probs = torch.addmv(bias, weight, rows.mean(0)).softmax(0)
    # Keep grad-cam's exact scale (W / (H·W)) so its 1e-7 epsilon acts the same on near-zero maps.
    cam = (rows @ (weight[target] / (h * w))).view(h, w)
    return probs.float().numpy(), _normalise_like_gradcam(cam.float().numpy(), (x.shape[-1], x.shape[-2]))


def gradcam_reference(model: TumorClassifier, x: torch.Tensor, target: int = POSITIVE_INDEX):
    """grad-cam's GradCAM on the last conv block → (probabilities, CAM at the input's size)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with torch.enable_grad(), GradCAM(model=model, target_layers=[model.features]) as cam:
        grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
        probs = cam.outputs.detach().softmax(dim=1)[0]
    return probs.float().numpy(), grayscale[0]


def compute(model: TumorClassifier, x: torch.Tensor, method: str = "fast-cam"):
    if method == "fast-cam":
        return predict_with_cam(model, x)
    if method == "grad-cam":
        return gradcam_reference(model, x)
    raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")


_JET_RGB = np.ascontiguousarray(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[..., ::-1])  # 256×1×3


@functools.lru_cache(maxsize=32)
def _blend_tables(opacity: float) -> tuple[np.ndarray, np.ndarray]:
    """The blend's two terms as colour tables: JET × opacity (256×1×3) and gray × (1 − opacity) (256), each
    rounded to a level."""
    heat = np.rint(_JET_RGB * opacity).astype(np.uint8)
    image = np.rint(np.arange(256) * (1.0 - opacity)).astype(np.uint8)
    heat.flags.writeable = image.flags.writeable = False  # shared by every request
    return heat, image


def heat_levels(cam: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The map as the overlay colours it: H×W uint8 levels at ``size_wh``, clipped to [0, 1] and truncated to
    a level as grad-cam's ``show_cam_on_image`` does, at the map's own size, then resized bilinearly as uint8.

    Resizing the levels rather than the float map is within one level of truncating a float resize (tested);
    for a 224² map shown on a 766×588 slice it skips a float image four times the size of the levels and a
    pass over it: the overlay right after a prediction 0.81–0.84 → 0.61–0.63 ms (Lite0, ad hoc).
    """
    cam = cam.astype(np.float32, copy=False)
    low, high, _, _ = cv2.minMaxLoc(cam)
    if low < 0 or high > 1:
        cam = np.clip(cam, 0, 1)
    # ×255 and truncated in one pass: the float product is never written back.
    level = np.multiply(cam, np.float32(255), out=np.empty(cam.shape, np.uint8), casting="unsafe")
    return cv2.resize(level, size_wh, interpolation=cv2.INTER_LINEAR)


def overlay(rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Heat map over the image at the image's own size (aspect kept).

    rgb: H×W×3 or H×W (grayscale) uint8, or float in [0,1].

    The same JET colouring (``COLORMAP_JET`` in RGB order, of the levels of :func:`heat_levels`) and weighting
    as grad-cam's ``show_cam_on_image``, without that function's final rescale by the blend's maximum. Each
    term of the blend is looked up in a table of its rounded values and the two are added, which is within
    one level of blending exactly (``cv2.addWeighted``; tested on every pair of levels) and exact at opacity
    0 and 1. The app then sends it as a JPEG, which moves pixels by more than that.
    """
    h, w = rgb.shape[:2]
    opacity = float(np.clip(opacity, 0.0, 1.0))
    heat_table, image_table = _blend_tables(opacity)
    # The image's term first: 0.07–0.1 ms less than after the map's, measured right after a prediction.
    image = rgb if rgb.dtype == np.uint8 else np.uint8(np.clip(rgb, 0, 1) * 255 + 0.5)
    image = cv2.LUT(image, image_table)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    heat = cv2.applyColorMap(heat_levels(cam, (w, h)), heat_table)
    return cv2.add(heat, image, dst=heat)


def peak_in_mask(cam: np.ndarray, lesion_mask: np.ndarray) -> bool:
    """Does the CAM's maximum fall inside the lesion outline? (mask: H×W bool, any size)"""
    h, w = lesion_mask.shape[:2]
    resized = cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(int(np.argmax(resized)), resized.shape)
    return bool(lesion_mask[y, x])


@torch.inference_mode()
def predict_batch(model: TumorClassifier, x: torch.Tensor, with_cam: bool = False, target: int = POSITIVE_INDEX):
    """Batched: (P(malignant) per image, CAMs at input size or None) from one forward pass."""
    feats = model.features(x)
    p = model.head(feats).softmax(dim=1)[:, 1].float().numpy()
    if not with_cam:
        return p, None
    weights = model.classifier.weight[target] / (feats.shape[-1] * feats.shape[-2])
    lowres = torch.einsum("k,nkhw->nhw", weights, feats).float().numpy()
    return p, [_normalise_like_gradcam(c, (x.shape[-1], x.shape[-2])) for c in lowres]
