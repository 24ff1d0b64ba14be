import numpy as np
import pytest
import torch

from conftest import run_cli
from tumortrace.cam import gradcam_reference, overlay, peak_in_mask, predict_batch, predict_with_cam
from tumortrace.models import ARCHS, PretrainedUnavailable, TumorClassifier, load_imagenet_trunk


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    torch.manual_seed(0)
    m = TumorClassifier(arch=request.param, image_size=96)
    if request.param == "efficientnet_lite0":
        load_imagenet_trunk(m)  # real ImageNet features: realistic, non-degenerate activations
    return m.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_pass_cam_equals_gradcam(model, seed):
    torch.manual_seed(seed)
    x = torch.randn(1, 3, 96, 96)
    p_fast, cam_fast = predict_with_cam(model, x)
    p_ref, cam_ref = gradcam_reference(model, x)
    assert cam_fast.shape == cam_ref.shape == (96, 96)
    assert np.abs(cam_fast - cam_ref).max() <= 1e-4
    assert np.abs(p_fast - p_ref).max() <= 1e-6 and p_fast.sum() == pytest.approx(1, abs=1e-6)


def test_batched_cam_matches_single(model):
    torch.manual_seed(5)
    x = torch.randn(3, 3, 96, 96)
    p, cams = predict_batch(model, x, with_cam=True)
    for i in range(3):
        p1, c1 = predict_with_cam(model, x[i:i + 1])
        assert p[i] == pytest.approx(p1[1], abs=1e-5)
        assert np.abs(cams[i] - c1).max() <= 1e-5


def test_two_classes_and_malignant_index():
    m = TumorClassifier(arch="resnet18")
    assert m.classifier.out_features == 2 and m.classes == ["benign", "malignant"]
    with pytest.raises(ValueError, match="index 1 = malignant"):
        TumorClassifier(classes=["malignant", "benign"])


def test_lite0_imagenet_start_is_the_bundled_file():
    m = TumorClassifier(arch="efficientnet_lite0")
    assert "efficientnet-lite0-57934424" in load_imagenet_trunk(m)


def test_pretrained_unavailable_is_loud(monkeypatch, tmp_path):
    import torchvision
    from urllib.error import URLError

    def offline(*a, **k):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, *a, **k: offline())
    with pytest.raises(PretrainedUnavailable, match="--no-pretrained"):
        load_imagenet_trunk(TumorClassifier(arch="resnet18"))
    with pytest.raises(PretrainedUnavailable, match="does not exist"):
        load_imagenet_trunk(TumorClassifier(arch="resnet18"), tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save(TumorClassifier(arch="efficientnet_b0").state_dict(), wrong)
    with pytest.raises(PretrainedUnavailable, match="do not fit resnet18"):
        load_imagenet_trunk(TumorClassifier(arch="resnet18"), wrong)


def test_overlay_keeps_aspect_and_peak_in_mask():
    rgb = np.zeros((50, 200, 3), np.float32)
    cam = np.zeros((64, 64), np.float32)
    cam[10, 50] = 1.0
    out = overlay(rgb, cam, 0.5)
    assert out.shape == (50, 200, 3) and out.dtype == np.uint8
    mask = np.zeros((50, 200), bool)
    mask[5:12, 150:165] = True  # the peak (row 10/64, col 50/64) maps to about (8, 156)
    assert peak_in_mask(cam, mask)
    assert not peak_in_mask(cam, ~mask)


def test_overlay_matches_gradcam_show_cam_on_image():
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (120, 90, 3)).astype(np.float32)
    rgb[0, 0] = 1.0  # full intensity present, as in any real slice: grad-cam's final rescale is then ~1
    cam = rng.uniform(0, 1, (32, 32)).astype(np.float32)
    jet = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET).astype(int)
    jet_step = np.abs(np.diff(jet, axis=0)).max()  # 5: the most a colour moves from one heat level to the next
    for opacity in (0.0, 0.45, 1.0):
        ours = overlay(rgb, cam, opacity).astype(int)
        ref = show_cam_on_image(rgb, cv2.resize(cam, (90, 120)), use_rgb=True, image_weight=1 - opacity)
        # rounding (2), and one heat level (the levels are resized, not the float map) weighted by the opacity
        assert np.abs(ours - ref).max() <= 2 + np.ceil(opacity * jet_step)


def test_grayscale_cache_resize_equals_three_channel_resize():
    from torchvision.transforms.v2 import functional as TF
    from tumortrace.preprocess import resized_uint8, to_rgb_float
    gray = np.random.default_rng(1).uniform(0, 1, (70, 50)).astype(np.float32)
    three = TF.resize(torch.from_numpy(to_rgb_float(gray)).permute(2, 0, 1), [32, 32], antialias=True)
    assert torch.equal(resized_uint8(gray, 32), (three.clamp(0, 1) * 255).round().to(torch.uint8))


@pytest.mark.parametrize("shape", [(588, 766), (37, 501), (64, 64), (1, 1), (90, 70, 3), (33, 200, 4)])
def test_model_input_is_the_cached_form_normalised_bit_for_bit(shape):
    """The app's input (straight from float) is what training and evaluation feed: the uint8 cache, normalised."""
    from torchvision.transforms.v2 import functional as TF
    from tumortrace.preprocess import IMAGENET_MEAN, IMAGENET_STD, model_input, normalize, resized_uint8, to_rgb_float
    rng = np.random.default_rng(sum(shape))
    pixels = rng.uniform(-0.05, 1.05, shape).astype(np.float32)  # out of range too: clamped the same
    pixels[0, 0] = 0.5 / 255  # exactly half a level: rounded the same way
    for size, mean, std in ((160, IMAGENET_MEAN, IMAGENET_STD), (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))):
        cached = resized_uint8(pixels, size)
        assert torch.equal(model_input(pixels, size, mean, std), normalize(cached, mean, std).unsqueeze(0))
        # and the cached form is still torchvision's resize of the RGB image, as when the models were trained
        rgb = torch.from_numpy(to_rgb_float(pixels)).permute(2, 0, 1)
        assert torch.equal(cached, (TF.resize(rgb, [size, size], antialias=True).clamp(0, 1) * 255).round().to(torch.uint8))


@pytest.mark.parametrize("shape", [(300, 200), (1500, 900)])  # the second is shrunk for display
def test_gray_slices_stay_one_channel_for_display_with_the_same_pixels(shape):
    from tumortrace.images import LoadedImage
    from tumortrace.inference import display_pixels, display_rgb

    rng = np.random.default_rng(0)
    gray = LoadedImage(rng.uniform(0, 1, shape).astype(np.float32))
    shown, rgb = display_pixels(gray), display_rgb(gray)
    assert shown.ndim == 2 and rgb.shape == shown.shape + (3,) and max(shown.shape) <= 1024
    # the same values as converting the replicated RGB image, channel for channel
    reference = display_rgb(LoadedImage(np.repeat(gray.pixels[..., None], 3, axis=2)))
    np.testing.assert_array_equal(rgb, reference)
    cam = rng.uniform(0, 1, (7, 7)).astype(np.float32)
    np.testing.assert_array_equal(overlay(shown, cam), overlay(rgb, cam))
    colour = LoadedImage(rng.uniform(0, 1, shape + (3,)).astype(np.float32))
    assert display_pixels(colour).shape[2] == 3


@pytest.mark.parametrize("shape", [(588, 766), (40, 30, 3)])
def test_overlay_is_opencvs_jet_blended_within_one_level(shape):
    """JET from OpenCV (BGR → RGB) of the map's levels, blended with ``addWeighted``: within one level, exact at
    opacity 0 and 1."""
    import cv2
    from tumortrace.cam import _normalise_like_gradcam, heat_levels
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[:2]
    rgb = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    in_range = _normalise_like_gradcam(rng.normal(0, 1, (7, 7)).astype(np.float32), (224, 224))  # as the app's
    out_of_range = rng.uniform(-0.1, 1.1, (14, 14)).astype(np.float32)  # clipped first
    for cam in (in_range, out_of_range):
        heat = cv2.cvtColor(cv2.applyColorMap(heat_levels(cam, (w, h)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        for opacity in (0.0, 0.3, 0.45, 1.0):
            expected = cv2.addWeighted(heat, opacity, rgb, 1 - opacity, 0)
            ours = overlay(image, cam, opacity)
            assert ours.shape == expected.shape and ours.dtype == np.uint8
            difference = np.abs(ours.astype(int) - expected).max()
            assert difference == 0 if opacity in (0.0, 1.0) else difference <= 1, (opacity, difference)


@pytest.mark.parametrize("cam_shape, size_wh", [((224, 224), (766, 588)), ((224, 224), (90, 120)),
                                                ((7, 7), (300, 200)), ((160, 160), (160, 160))])
def test_heat_levels_are_within_one_level_of_truncating_a_float_resize(cam_shape, size_wh):
    """The overlay resizes the map's levels (uint8), not the float map: each level within one of grad-cam's
    ``uint8(255 * mask)`` of the (clipped) map resized as float, and the same where nothing is resized."""
    import cv2
    from tumortrace.cam import _normalise_like_gradcam, heat_levels
    rng = np.random.default_rng(4)
    smooth = _normalise_like_gradcam(rng.normal(0, 1, (7, 7)).astype(np.float32), cam_shape[::-1])  # as the app's
    rough = rng.uniform(-0.2, 1.2, cam_shape).astype(np.float32)  # neighbours far apart, out of range too
    for cam in (smooth, rough):
        float_first = np.uint8(255 * cv2.resize(np.clip(cam, 0, 1), size_wh, interpolation=cv2.INTER_LINEAR))
        ours = heat_levels(cam, size_wh)
        assert ours.shape == float_first.shape and ours.dtype == np.uint8
        difference = np.abs(ours.astype(int) - float_first).max()
        assert difference == 0 if cam_shape == size_wh[::-1] else difference <= 1, difference
        assert cam.min() < 0 or cam is smooth  # the caller's map is left as it was (clipped on a copy)


def test_overlay_blend_is_within_one_level_for_every_pair_of_levels():
    import cv2
    level = np.arange(256, dtype=np.uint8)
    gray = np.repeat(level[:, None], 256, axis=1)  # row: the image's level
    cam = np.repeat((level[None, :] + np.float32(0.5)) / np.float32(255), 256, axis=0)  # column: the map's level
    heat = cv2.cvtColor(cv2.applyColorMap(np.repeat(level[None, :], 256, axis=0), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    assert np.array_equal(np.uint8(255 * cam), np.repeat(level[None, :], 256, axis=0))  # the map reaches each level
    differences = []
    for opacity in np.linspace(0, 1, 21):
        expected = cv2.addWeighted(heat, opacity, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB), 1 - opacity, 0)
        differences.append(np.abs(overlay(gray, cam, opacity).astype(int) - expected).max())
    assert max(differences) == 1 and differences[0] == differences[-1] == 0


@pytest.mark.parametrize("shape, size", [((7, 7), (224, 224)), ((5, 9), (160, 120)), ((7, 7), (7, 7))])
def test_cam_post_processing_is_gradcams_bit_for_bit(shape, size):
    """The CAM's min–max and resize are grad-cam's own scale_cam_image, copied: the same bits, near-zero maps too."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from tumortrace.cam import _normalise_like_gradcam, _scale_like_gradcam

    rng = np.random.default_rng(3)
    maps = [rng.normal(0, 1, shape), rng.uniform(0, 1e-8, shape), np.zeros(shape), -rng.uniform(0, 1, shape),
            rng.normal(0, 1e3, shape)]
    for cam in (m.astype(np.float32) for m in maps):
        reference = scale_cam_image(np.maximum(scale_cam_image(np.maximum(cam, 0)[None], size), 0))[0]
        ours = _normalise_like_gradcam(cam, size)
        assert ours.dtype == reference.dtype == np.float32 and ours.shape == reference.shape
        np.testing.assert_array_equal(ours, reference)
        # the second scale's own ReLU, which the resize leaves with nothing to do here, on maps below 0 too
        np.testing.assert_array_equal(_scale_like_gradcam(cam.copy(), relu_in_place=True),
                                      scale_cam_image(np.maximum(cam, 0)[None])[0])


def test_the_app_imports_neither_grad_cam_nor_scikit_learn_with_itself():
    """grad-cam (with scikit-learn's decompositions) costs ~0.35 s of a cold start and only its method needs it;
    scikit-learn's metrics (~0.7 s) are imported by main() on a thread of their own once the server is up."""
    code = ("import sys, app; print('pytorch_grad_cam' in sys.modules, 'sklearn' in sys.modules); "
            "app.import_after_start('tumortrace.metrics').join(); print('sklearn.metrics' in sys.modules); "
            "print(app.threshold_markdown({'per_image': [{'label': 'malignant', 'p_malignant': 0.9}, "
            "{'label': 'benign', 'p_malignant': 0.2}]}, 0.5).splitlines()[-1])")
    out = run_cli("-c", code, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-3:] == ["False False", "True", "TP 1 · FN 0 · FP 0 · TN 1"]


def test_single_pass_cam_refuses_a_model_in_training_mode(model):
    """Its head leaves dropout out, which is right in eval only: a training-mode model is refused, not mispredicted."""
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            predict_with_cam(model, torch.zeros(1, 3, 96, 96))
    finally:
        model.eval()
