"""TumorTrace web demo: upload one breast-lesion slice, see benign/malignant probabilities and Grad-CAM.

    python app.py [--host 127.0.0.1] [--port 7860] [--model DIR_OR_HUB_ID --revision REV] [--share]

Research and review only, never for diagnosis. With --share a login is mandatory
(TUMORTRACE_AUTH="user:password[,user2:password2]" or --auth-file FILE with one user:password a line).
"""
from __future__ import annotations

import argparse
import atexit
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Before gradio is imported: no telemetry, and a private upload/cache folder this process removes on exit (also
# when it only imports the app; a signal that stops the app is turned into an exit by main()).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
_OWN_TEMP_DIR = None
if "GRADIO_TEMP_DIR" not in os.environ:
    _OWN_TEMP_DIR = os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="tumortrace-gradio-")
    atexit.register(shutil.rmtree, _OWN_TEMP_DIR, ignore_errors=True)

from tumortrace import openmp  # noqa: E402

# Before torch is imported, which loads libgomp: its idle threads spin briefly after a parallel region.
_OPENMP_SPIN = openmp.shorten_spin()

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tumortrace import (INTENDED_USE, POSITIVE_CLASS, __version__, gradio_paths, gradio_uploads,  # noqa: E402
                        malloc, no_store, output_files, server_hops)
from tumortrace.ahead import ClassifyAhead  # noqa: E402
from tumortrace.cam import CAM_METHODS, overlay  # noqa: E402
from tumortrace.checkpoint import LoadedModel, ModelLoadError, atomic_write_bytes  # noqa: E402
from tumortrace.gradio_queue import events_waiting, serving_queue  # noqa: E402
from tumortrace.images import ImageLoadError, LoadedImage  # noqa: E402
from tumortrace.inference import display_pixels, predict_image  # noqa: E402
from tumortrace.lone import LonePredictions  # noqa: E402
from tumortrace.png import encode_png  # noqa: E402
from tumortrace.registry import Registry, build_registry  # noqa: E402
from tumortrace.uploads import DecodeAhead, RecentUploads, frame_key, read_upload, upload_key  # noqa: E402

# The output images this process wrote last: answered before Gradio's file route (tumortrace.output_files).
RECENT_OUTPUTS = output_files.RecentOutputs()

log = logging.getLogger("tumortrace.app")
ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MAX_FILE_SIZE = "25mb"
# Gradio's markdown tables may break words anywhere (word-break: break-word), which also lets a table squeeze a
# column below its longest word; overflow-wrap: break-word breaks only a word that cannot fit otherwise.
# Gradio shows an output image at most at its own size (object-fit: scale-down): a 64×64 or 256×256 MR slice
# and its overlay sat small in the middle of their 380 px boxes. They fill the box instead, keeping their
# aspect (the browser interpolates, as an image viewer's zoom does).
CSS = (".prose td, .prose th { overflow-wrap: break-word; word-break: normal; }\n"
       ".slice-view img { object-fit: contain; }")
FORGET_RUN_HISTORY_JS = """() => {
  for (const store of [localStorage, sessionStorage])
    for (const key of Object.keys(store)) if (key.startsWith('gradio:run-history:')) store.removeItem(key);
}"""
OPACITY = 0.45  # the Grad-CAM overlay's, until the page's slider or an API call sets another
CONCURRENCY = 2  # predictions at once (default of --concurrency): the 2-core target machine is saturated by two
METRIC_ROWS = [("roc_auc", "ROC-AUC"), ("recall", "Sensitivity (recall)"), ("specificity", "Specificity"),
               ("precision", "Precision (PPV)"), ("npv", "NPV"), ("f1", "F1"), ("accuracy", "Accuracy"),
               ("balanced_accuracy", "Balanced accuracy")]


class UploadFile(gr.File):
    """gr.File(type="filepath") without Gradio 6.31's leak: its preprocessing opens an empty
    NamedTemporaryFile in the cache on every call and never removes it (one file per request)."""

    def get_block_name(self) -> str:
        return "file"  # the same front-end component

    def _process_single_file(self, f):
        from gradio.utils import NamedString

        return NamedString(f.path)


# ---------------------------------------------------------------- text for the page
def header_markdown(registry: Registry, loaded: LoadedModel | None) -> str:
    lines = ["# TumorTrace — breast lesion slice classifier",
             f"**Intended use: {INTENDED_USE}** Do not use it to make decisions about patients."]
    if loaded is not None:
        c = loaded.config
        lines.append(f"Selected model: `{c['arch']}` trained on **{c.get('modality', 'unspecified')}** images — "
                     f"{c.get('training_data', 'unspecified data')}.")
        if c.get("modality") not in (None, "mri", "MRI", "MR"):
            lines.append("⚠️ This model was **not** trained on MRI; predictions on MRI slices are unvalidated.")
    if registry.notice:
        lines.append(f"⚠️ **{registry.notice}**")
    for name, error in registry.errors.items():
        lines.append(f"❌ **Model `{name}` could not be loaded and is not offered:** {error}")
    return "\n\n".join(lines)


def provenance(loaded: LoadedModel, cam_method: str) -> str:
    where = (f"Hub `{loaded.source}` @ `{loaded.revision}`" if loaded.revision
             else f"local `{os.path.relpath(loaded.folder, ROOT) if loaded.folder.is_relative_to(ROOT) else loaded.folder}`")
    served = (" (served with BatchNorm folded" + (" and a TorchScript trunk" if loaded.scripted else "") + ", for speed)"
              if loaded.folded else "")
    return (f"model `{loaded.config['arch']}`{served} · {where} · weights sha256 `{loaded.sha256[:12]}` · "
            f"CAM: {cam_method} · TumorTrace {__version__}")


def metrics_markdown(evaluation: dict | None) -> str:
    if not evaluation:
        return "No `evaluation.json` was shipped with this model: no held-out metrics to show."
    d, v = evaluation["thresholds"]["default_0.5"], evaluation["thresholds"]["validated"]
    rows = ["| metric (positive class: **malignant**) | at 0.5 | at validated threshold "
            f"{v['threshold']:.3f} |", "|---|---|---|"]
    for key, label in METRIC_ROWS:
        cells = []
        for block in (d, v):
            lo, hi = block["ci95"][key]
            cells.append(f"{block['metrics'][key]:.3f} (95% CI {lo:.3f}–{hi:.3f})")
        rows.append(f"| {label} | {cells[0]} | {cells[1]} |")
    cm = v["metrics"]["confusion_matrix"]
    rows.append("")
    rows.append(f"**Confusion matrix at {v['threshold']:.3f}** (positive = malignant): "
                f"TP {cm['tp']} · FN {cm['fn']} · FP {cm['fp']} · TN {cm['tn']}")
    rows.append(f"\nHeld-out test split: {evaluation['n_images']} images ({evaluation['n_malignant']} malignant, "
                f"{evaluation['n_benign']} benign). Threshold rule: {v.get('rule', '')}. "
                f"CIs: bootstrap over duplicate groups.")
    cam = evaluation.get("cam_peak_in_mask") or {}
    parts = [f"{cls} {c['inside']}/{c['n']}" for cls, c in cam.items() if c.get("n")]
    if parts:
        rows.append(f"\nGrad-CAM peak inside the radiologist's lesion mask (test): {', '.join(parts)}.")
    return "\n".join(rows)


def threshold_markdown(evaluation: dict | None, threshold: float) -> str:
    if not evaluation or not evaluation.get("per_image"):
        return "No per-image test probabilities shipped with this model."
    from tumortrace.metrics import binary_metrics, per_image_labels  # imported once the server is up: see main()

    m = binary_metrics(*per_image_labels(evaluation["per_image"]), threshold)
    cm = m["confusion_matrix"]
    return (f"At threshold **{threshold:.3f}** (call *malignant* when P(malignant) ≥ threshold), on the held-out "
            f"test images — positive class **malignant**:\n\n"
            f"| sensitivity | specificity | PPV | NPV |\n|---|---|---|---|\n"
            f"| {m['recall']:.3f} | {m['specificity']:.3f} | {m['precision']:.3f} | {m['npv']:.3f} |\n\n"
            f"TP {cm['tp']} · FN {cm['fn']} · FP {cm['fp']} · TN {cm['tn']}")


def calibration_markdown(evaluation: dict | None) -> str:
    from tumortrace.card import calibration_markdown  # with scikit-learn: imported once the server is up (main())

    return calibration_markdown(evaluation)


def evaluation_texts(loaded: LoadedModel, *views) -> list[str]:
    """Each ``(view, *args)`` of the model's evaluation.json, read once: ``view(evaluation, *args)``, or, for a
    file this version cannot read (a model folder or Hub repo may carry any), what is wrong with it in that
    view's place, so that the rest of the Evaluation tab and the model still serve."""
    path = loaded.file("evaluation.json")
    try:
        evaluation = _read_json(path)
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        return [_cannot_show(path, exc)] * len(views)
    texts = []
    for view, *args in views:
        try:
            texts.append(view(evaluation, *args))
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # a key or a value it would not have written
            texts.append(_cannot_show(path, exc, view.__name__))
    return texts


def _cannot_show(path: Path, exc: Exception, view: str = "every view") -> str:
    log.warning("%s cannot be shown (%s): %s: %s", path, view, type(exc).__name__, exc)
    return f"❌ **This model's `evaluation.json` cannot be shown here** ({type(exc).__name__}: {exc})."


def model_card(loaded: LoadedModel) -> str:
    path = loaded.file("README.md")
    text = path.read_text(encoding="utf-8") if path else "This model has no model card."
    return re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # the Hub metadata block is not for people


# ---------------------------------------------------------------- the app
def build_app(registry: Registry, cam_method: str = "fast-cam", concurrency: int = CONCURRENCY,
              decode_ahead: bool = True, classify_ahead: bool = True, wide_alone: bool = True) -> gr.Blocks:
    """With ``decode_ahead``, an upload's first frame is decoded as it arrives (``tumortrace.uploads``); with
    ``classify_ahead`` too, it is then classified for the model and opacity last asked for, in memory, for
    the click that comes next (``tumortrace.ahead``). Both only while no prediction runs; classifying also
    only while none waits in the queue. With ``wide_alone``, a prediction that runs alone (none other
    running or waiting) runs on every core where each prediction's share is fewer (``tumortrace.lone``: a
    second trunk per model, built in the background from here on); call this on a thread at the app's torch
    thread count."""
    choices = registry.names
    first = registry.models[choices[0]] if choices else None
    recent = RecentUploads()
    running = Running()
    encoder = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="tumortrace-encode")
    lone = None
    if (threads := threads_alone(wide_alone, registry)) > torch.get_num_threads():
        lone = LonePredictions(threads)
        lone.build(registry.models)

    def render_alone(model_name: str, image: LoadedImage, opacity: float) -> Rendered | None:
        """On every core (tumortrace.lone), once the model's copy for that is ready; else None."""
        wide = lone.model(model_name) if lone is not None else None
        return lone.run(render, wide, image, cam_method, opacity, encoder, False) if wide is not None else None

    classified = None
    if decode_ahead and classify_ahead:
        # Started only while the app is idle: alone, as long as no request comes.
        classified = ClassifyAhead(lambda name, opacity, image: (render_alone(name, image, opacity) or render(
                                       registry.get(name), image, cam_method, opacity, encoder)),
                                   choices[0] if choices else None, OPACITY,
                                   idle=lambda: running.none() and not events_waiting(demo))
    ahead = (DecodeAhead(recent, idle=running.none, then=classified.start if classified else None)
             if decode_ahead else None)

    def alone() -> bool:
        """This request's prediction is the only one running, none waits, and none is classified ahead."""
        return running.count == 1 and not events_waiting(demo) and not (classified and classified.busy())

    def get_model(name: str) -> LoadedModel:
        try:
            return registry.get(name)
        except ModelLoadError as exc:
            raise gr.Error(str(exc)) from None

    def checked_inputs(model_name: str, opacity: float, frame: float | None) -> tuple[str, float, int]:
        """The model, opacity and frame a client sent, as the page's components read them, or a gr.Error."""
        return (api_input(model_choice, model_name, f"the model must be one of: {', '.join(choices) or 'none'}"),
                api_input(opacity_slider, opacity, "the Grad-CAM opacity must be a number from 0 to 1"),
                int(api_input(frame_number, frame, "the frame must be a whole number from 1 (1 = the first frame)")))

    def predict(file: dict | None, model_name: str, opacity: float = OPACITY, frame: float | None = 1) -> list:
        """Classify one uploaded slice (frame ``frame`` of a multi-frame DICOM or multi-page TIFF):
        probabilities, Grad-CAM overlay, provenance (API: /predict).

        Wired with Gradio's pre- and postprocessing off, so the inputs and outputs are Gradio's wire format
        (the upload as a FileData dict whose path Gradio has checked is in its upload folder). The
        components' own preprocess and postprocess run here instead: Gradio would run each of the eight in
        a worker thread of its own, ~7 ms of Gradio's time around a lone request (benchmarks/HISTORY.md).
        """
        model_name, opacity, frame = checked_inputs(model_name, opacity, frame)
        if not file:
            raise gr.Error("Upload an image first (PNG, JPEG, TIFF, BMP or DICOM).")
        started = time.perf_counter()
        loaded = get_model(model_name)
        upload = Path(file["path"])
        with running:
            try:
                image = read_upload(upload, recent, frame, ahead)
            except ImageLoadError as exc:
                raise gr.Error(f"Cannot use this file: {exc.reason}") from None
            rendered = classified.take(upload_key(upload), image, model_name, opacity) if classified else None
            when = "classified as it arrived" if rendered is not None else "classified now"
            if rendered is None and alone():
                rendered = render_alone(model_name, image, opacity)
                when += f", alone on {lone.threads} torch threads" if rendered is not None else ""
            if rendered is None:
                rendered = render(loaded, image, cam_method, opacity, encoder)
            heat_file, slice_file = write_outputs(rendered)
        recent.put(cam_key(upload, frame, model_name), rendered.cam)
        if classified:
            classified.expect(model_name, opacity)
        notes = [f"{k}: {v}" for k, v in image.info.items() if k in ("window", "frame", "inverted", "alpha",
                                                                      "intensity_scaling", "warning")]
        decision = (f"**Decision at the model's validated threshold {rendered.threshold:.3f}: "
                    f"{rendered.decision}** "
                    f"(P(malignant) = {rendered.p_malignant:.3f}; positive class: {POSITIVE_CLASS}). "
                    "Research output, not a diagnosis." + ("\n\n" + " · ".join(notes) if notes else ""))
        log.info("predict: %s, %s, %.0f ms in the handler", loaded.config["arch"], when,
                 (time.perf_counter() - started) * 1e3)
        values = (rendered.probabilities, heat_file, slice_file, decision, provenance(loaded, cam_method))
        wire = [_wire(component.postprocess(value)) for component, value in zip(outputs, values)]
        wire[1]["orig_name"], wire[2]["orig_name"] = download_names(upload, frame, image.frames,
                                                                   model_name)
        return wire

    def redraw_overlay(file: dict | None, model_name: str, opacity: float, frame: float | None,
                       shown: dict | None) -> dict:
        """The overlay of the answer shown, at the opacity the slider was moved to, from that answer's map
        (kept with the decoded upload in ``recent``): no model run, ~3 ms. Where either is gone, the answer is
        computed again (and an upload no longer held asks for the file again). Nothing when no answer is
        shown (none yet, or cleared since: a new file, frame or model clears it), so that moving the slider
        never classifies a file nobody asked about. The page's own event, not the API's."""
        if not shown or not file:
            return gr.skip()
        model_name, opacity, frame = checked_inputs(model_name, opacity, frame)
        started, upload = time.perf_counter(), Path(file["path"])
        cam = recent.get(cam_key(upload, frame, model_name))
        image = recent.get(frame_key(upload_key(upload), frame))
        if not isinstance(cam, np.ndarray) or not isinstance(image, LoadedImage):
            return predict(file, model_name, opacity, frame)[1]
        heat_file = store_output(overlay_jpeg(display_pixels(image), cam, opacity), "gradcam.jpg")
        if classified:
            classified.expect(model_name, opacity)
        log.info("overlay redrawn at opacity %.2f, %.0f ms in the handler", opacity,
                 (time.perf_counter() - started) * 1e3)
        wire = _wire(heat.postprocess(heat_file))
        wire["orig_name"] = download_names(upload, frame, image.frames, model_name)[0]
        return wire

    def select_model(model_name: str):
        loaded = get_model(model_name)
        if classified:
            classified.expect(model=model_name)  # a page opened or changed its model: its next click's, likely
        threshold = loaded.model.threshold
        metrics_text, calibration_text, threshold_text = evaluation_texts(
            loaded, (metrics_markdown,), (calibration_markdown,), (threshold_markdown, threshold))
        return (header_markdown(registry, loaded), metrics_text, calibration_text,
                _path_or_none(loaded.file("roc.png")), _path_or_none(loaded.file("curves.png")),
                gr.update(value=threshold), threshold_text, model_card(loaded))

    def move_threshold(model_name: str, threshold: float) -> str:
        return evaluation_texts(get_model(model_name), (threshold_markdown, threshold))[0]

    examples = sorted(str(p) for p in EXAMPLES.glob("*") if p.is_file() and p.suffix != ".md")
    with gr.Blocks(title="TumorTrace (research demo)", delete_cache=(60, 300)) as demo:
        header = gr.Markdown(header_markdown(registry, first))
        model_choice = gr.Dropdown(choices, value=choices[0] if choices else None, label="Model",
                                   interactive=bool(choices))
        with gr.Tabs():
            with gr.Tab("Predict"):
                with gr.Row():
                    with gr.Column():
                        upload = UploadFile(label="Image slice (PNG, JPEG, TIFF, 16-bit, DICOM .dcm)", type="filepath")
                        opacity_slider = gr.Slider(0, 1, value=OPACITY, step=0.05, label="Grad-CAM opacity")
                        frame_number = gr.Number(1, minimum=1, precision=0, step=1,
                                                 label="Frame of a multi-frame DICOM or multi-page TIFF (1 = first)")
                        run = gr.Button("Classify", variant="primary")
                        if examples:
                            gr.Examples(examples, inputs=upload, label="Example slices (shipped in examples/)")
                    with gr.Column():
                        # No heading: the arg-max class would contradict the decision at the validated threshold.
                        probs = gr.Label(num_top_classes=2, label="Probabilities (benign / malignant)",
                                         show_heading=False)
                        decision_text = gr.Markdown(label="decision")
                with gr.Row():
                    # interactive=False: also an input (of the opacity's redraw), which would make it an upload box
                    heat = gr.Image(label="Grad-CAM for the malignant class", format="png", type="numpy",
                                    height=380, buttons=["download", "fullscreen"], elem_classes=["slice-view"],
                                    interactive=False)
                    raw = gr.Image(label="Image as the model saw it (before resizing)", format="png", type="numpy",
                                   height=380, buttons=["download", "fullscreen"], elem_classes=["slice-view"])
                prov = gr.Markdown(label="provenance")
            with gr.Tab("Evaluation"):
                metrics = gr.Markdown()
                calib = gr.Markdown()
                with gr.Row():
                    roc = gr.Image(label="ROC curve, held-out test split", type="filepath")
                    curves = gr.Image(label="Training curves", type="filepath")
                thr = gr.Slider(0, 1, step=0.001, value=first.model.threshold if first else 0.5,
                                label="Threshold on P(malignant)")
                thr_table = gr.Markdown()
            with gr.Tab("About"):
                card = gr.Markdown()

        # wiring
        outputs = [probs, heat, raw, decision_text, prov]
        # One concurrency group for both: each prediction's torch threads assume at most `concurrency` at once.
        redraw = opacity_slider.input(redraw_overlay, [upload, model_choice, opacity_slider, frame_number, heat],
                                        heat, preprocess=False, postprocess=False, api_visibility="private",
                                        concurrency_id="predict", trigger_mode="always_last")
        # In the browser only: the last answer goes when a new request starts or its file, frame or model
        # changes, so that no decision sits beside an error or inputs it does not belong to (nor an overlay
        # redrawn for the answer before). The Label takes {}: null throws in its frontend and the whole update
        # is dropped.
        for changed in (run.click, upload.change, frame_number.change, model_choice.change):
            changed(None, None, outputs, js="() => [{}, null, null, '', '']", cancels=[redraw])
        run.click(predict, [upload, model_choice, opacity_slider, frame_number], outputs, api_name="predict",
                  preprocess=False, postprocess=False, concurrency_id="predict")
        view = [header, metrics, calib, roc, curves, thr, thr_table, card]
        model_choice.change(select_model, model_choice, view, api_visibility="private")
        thr.change(move_threshold, [model_choice, thr], thr_table, api_visibility="private")
        if choices:
            demo.load(select_model, model_choice, view, api_visibility="private")
        # Run history is off (launch()), but Gradio leaves in the browser what it recorded before: every earlier
        # prediction's file name, result and image links, with no expiry. The page removes them when it opens.
        demo.load(None, None, None, js=FORGET_RUN_HISTORY_JS)
    # api_open=False: Gradio (off Spaces) also serves a queued event at POST /gradio_api/run/<name>, which runs
    # it at once, outside the queue's concurrency limit and max_size, so any client could start as many
    # predictions at once as it liked; the page, gradio_client and /call all go through the queue.
    demo.queue(default_concurrency_limit=concurrency, max_size=64, api_open=False)
    serving_queue(demo)
    if ahead is not None and not gradio_uploads.call_after_upload(demo, ahead.start):
        log.warning("Gradio's upload route is not the one tumortrace.gradio_uploads wraps (another Gradio than "
                    "requirements.txt pins?): uploads are decoded when their prediction is asked for")
    return demo


class Running:
    """How many predictions are running, counted by ``with running:`` around each."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            self.count += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self.count -= 1

    def none(self) -> bool:
        return self.count == 0


def api_input(component: gr.components.Component, value, rule: str):
    """``component.preprocess(value)`` for a value an API client sent (the page only sends valid ones), or
    an error stating ``rule`` and the value: out of range (Gradio's own error, a ValueError, names neither
    the input nor what it may be), of the wrong type (a TypeError from Gradio), NaN or infinity (which
    Gradio lets through)."""
    try:
        out = component.preprocess(value)
    except (TypeError, ValueError, OverflowError):  # gr.Error is a ValueError
        out = None
    if out is None or isinstance(out, (bool, list, dict)) or (isinstance(out, float) and not math.isfinite(out)):
        raise gr.Error(f"{rule[0].upper()}{rule[1:]}; got {str(value)[:40]!r}.")
    return out


@dataclass(frozen=True)
class Rendered:
    """What one prediction returns, encoded, before any of it is written to disk. No pixels of the upload:
    a result held for a click (tumortrace.ahead) must not keep a large decoded upload in memory."""
    probabilities: dict[str, float]  # {"benign": p, "malignant": p}
    decision: str  # the class at the model's validated threshold
    threshold: float
    overlay_jpeg: bytes  # the Grad-CAM overlay for the malignant class
    slice_png: bytes  # the slice as the model saw it, lossless (at most 1024 px a side: display_pixels)
    cam: np.ndarray  # the overlay's map, S×S at the model's input size (~200 KB): redrawn at other opacities

    @property
    def p_malignant(self) -> float:
        return self.probabilities["malignant"]


def render(loaded: LoadedModel, image: LoadedImage, cam_method: str, opacity: float, encoder: Executor,
           beside_the_model: bool = True) -> Rendered:
    """The prediction, its Grad-CAM overlay and the slice, encoded, for one decoded upload.

    The slice's lossless PNG (:func:`tumortrace.png.encode_png`: 1.4 ms for a 766×588 slice, against ~90 ms
    for Gradio's default PNG and 4.6 for OpenCV's at its fastest settings) does not depend on the prediction,
    so ``encoder`` encodes it while the model runs: on the core that a lone request leaves idle (each
    prediction has cores ÷ concurrency torch threads). Under full load it is the same work as before. A model
    that uses every core (``beside_the_model`` False: ``tumortrace.lone``) would be slowed by it: it is encoded
    beside the overlay.
    """
    shown = display_pixels(image)  # gray stays one channel: about half the PNG work
    slice_png = encoder.submit(encode_png, shown) if beside_the_model else None
    pred = predict_image(loaded, image, cam_method)
    if slice_png is None:
        slice_png = encoder.submit(encode_png, shown)
    return Rendered(pred.probabilities, pred.decision, pred.threshold, overlay_jpeg(shown, pred.cam, opacity),
                    slice_png.result(), pred.cam)


def overlay_jpeg(shown: np.ndarray, cam: np.ndarray, opacity: float) -> bytes:
    """The Grad-CAM overlay as sent: ``cam`` over the slice's display pixels at ``opacity``, as a JPEG."""
    return encode_jpeg(overlay(shown, cam, opacity))


def cam_key(upload: Path, frame: int, model_name: str) -> str:
    """Where the map of an answer is kept in the app's recent uploads, beside the decoded upload."""
    return f"{frame_key(upload_key(upload), frame)} cam {model_name}"


def write_outputs(rendered: Rendered) -> tuple[str, str]:
    """The overlay's and the slice's files, for Gradio to serve."""
    return store_output(rendered.overlay_jpeg, "gradcam.jpg"), store_output(rendered.slice_png, "image.png")


def download_names(upload: Path, frame: int, frames: int, model_name: str) -> tuple[str, str]:
    """What the page's download buttons name the overlay and the slice: after the uploaded file (as Gradio
    stored it, its name cleaned of characters a file name may not hold), its frame where it has several,
    and, for the overlay, the class and the model, so that downloads from several slices and models do not
    all arrive as "gradcam.jpg". The files on the server keep their content-addressed names."""
    stem = upload.stem + (f"_frame{frame}" if frames > 1 else "")
    return f"{stem}_gradcam_malignant_{model_name}.jpg", f"{stem}_as_seen.png"


def encode_jpeg(image: np.ndarray) -> bytes:
    """The Grad-CAM overlay is a visualisation: a JPEG at quality 90 (~1.3 ms, a third of a PNG's bytes), as
    Gradio itself sends lossy WebP by default."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("could not encode the overlay image")
    return encoded.tobytes()


def store_output(data: bytes, name: str) -> str:
    """Write an encoded output image into Gradio's own cache, content-addressed like Gradio's and swept with
    it, and register it with ``RECENT_OUTPUTS``; its path. No fsync: the cache is temporary."""
    import hashlib

    folder = Path(os.environ["GRADIO_TEMP_DIR"]) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.exists():
        os.utime(path)  # same hash, same bytes: another request may be serving it; restart its cache age
    else:
        atomic_write_bytes(path, data, durable=False)  # never a half-written file where a concurrent client reads
    RECENT_OUTPUTS.add(str(path))
    return str(path)


def _wire(value):
    """A component's postprocessed value as Gradio sends it (its data models as plain dicts)."""
    return value.model_dump() if hasattr(value, "model_dump") else value


def _read_json(path: Path | None) -> dict | None:
    import json
    return json.loads(path.read_text()) if path else None


def _path_or_none(path: Path | None) -> str | None:
    return str(path) if path else None


# ---------------------------------------------------------------- command line
def parse_credentials(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in re.split(r"[,\n]", text):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError("credentials must be user:password pairs separated by commas or lines")
        pairs.append((user, password))
    return pairs


def credentials(args) -> list[tuple[str, str]] | None:
    text = Path(args.auth_file).read_text() if args.auth_file else os.environ.get("TUMORTRACE_AUTH", "")
    return parse_credentials(text) or None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--model", default=os.environ.get("TUMORTRACE_MODEL"),
                   help="Hub repo id or local model folder (default: $TUMORTRACE_MODEL, else every model in weights/)")
    p.add_argument("--revision", default=os.environ.get("TUMORTRACE_REVISION"),
                   help="pinned Hub revision (default: $TUMORTRACE_REVISION, else main)")
    p.add_argument("--share", action="store_true", help="open a public share link; needs a login (default: off)")
    p.add_argument("--auth-file", default=None, help="file of user:password lines (default: $TUMORTRACE_AUTH)")
    p.add_argument("--cam-method", default="fast-cam", choices=CAM_METHODS,
                   help="fast-cam: one forward pass; grad-cam: the grad-cam package (default: fast-cam)")
    p.add_argument("--concurrency", type=positive_int, default=CONCURRENCY,
                   help=f"predictions run at once; more waits in the queue (default: {CONCURRENCY})")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads per prediction, 0 = the CPU cores available ÷ --concurrency (default: 0)")
    p.add_argument("--no-decode-ahead", dest="decode_ahead", action="store_false",
                   help="decode an upload only when its prediction is asked for; by default its first frame is "
                        "decoded as it arrives, while no prediction runs, and held in memory for its request "
                        "(default: on arrival)")
    p.add_argument("--no-classify-ahead", dest="classify_ahead", action="store_false",
                   help="classify an upload only when its prediction is asked for; by default, once decoded as it "
                        "arrived, it is classified for the model and opacity last asked for, while no prediction "
                        "runs or waits, and the result held in memory for a request that asks for exactly that "
                        "(default: ahead)")
    p.add_argument("--no-wide-alone", dest="wide_alone", action="store_false",
                   help="run every prediction on its share of the cores (--threads); by default one that runs "
                        "alone uses them all, with a second copy of each model's trunk built for that in the "
                        "background after the start (~50 MiB for the two shipped models) (default: all cores)")
    p.add_argument("--no-direct-outputs", dest="direct_outputs", action="store_false",
                   help="serve the output images only through Gradio's file route; by default a plain GET for "
                        "one the app just wrote is answered before it, where no login is set "
                        "(tumortrace/output_files.py) (default: direct)")
    p.add_argument("--no-fold-batchnorm", dest="fold_batchnorm", action="store_false",
                   help="serve the models' modules exactly as trained; by default each BatchNorm is folded into "
                        "its convolution (faster; outputs checked within 1e-4 at load) (default: folded)")
    p.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                   help="keep the folded trunk in eager PyTorch; by default it is frozen with TorchScript for the "
                        "fast-cam path (faster on the CPU; outputs checked within 1e-4 at load) (default: frozen)")
    return p


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (automatic) or more")
    return value


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_alone(wide_alone: bool, registry: Registry) -> int:
    """Torch threads of a prediction that runs alone: every core with ``wide_alone`` (``tumortrace.lone``),
    else this thread's count, as every prediction."""
    share = torch.get_num_threads()
    return max(share, available_cores()) if wide_alone and registry.models else share


def describe_alone(wide_alone: bool, registry: Registry) -> str:
    """For the "serving" log line."""
    threads = threads_alone(wide_alone, registry)
    if threads == torch.get_num_threads():
        return "a prediction running alone on its share of the cores too"
    return f"a prediction running alone on {threads} torch threads (a second trunk per model)"


def threads_per_prediction(requested: int, concurrency: int, cores: int | None = None) -> int:
    """Torch threads for each of the `concurrency` predictions that may run at once.

    Torch's default is one thread per core for every call; two concurrent predictions then run four busy
    threads on two cores. Sharing the cores instead cut the server's CPU per request by ~10% under 8
    clients with the same single-client latency (benchmarks/HISTORY.md).
    """
    if requested > 0:
        return requested
    return max(1, (cores or available_cores()) // concurrency)


def import_after_start(module: str) -> threading.Thread:
    """Import ``module`` on a thread of its own once the server is up, rather than before it serves.

    For scikit-learn (``tumortrace.metrics``, ~0.7 s of imports): the cold start to serving went from 5.36 to
    4.85 s (benchmarks/HISTORY.md). Imported beside the model loading instead it saved nothing: both hold the
    GIL most of the time. A handler that needs the module before it is ready waits on Python's import lock.
    """
    import importlib
    thread = threading.Thread(target=importlib.import_module, args=(module,), name=f"import-{module}", daemon=True)
    thread.start()
    return thread


def server_stack(demo: gr.Blocks) -> str:
    """The event loop and HTTP parser the running server uses, e.g. "uvloop event loop, httptools HTTP parser".

    Gradio leaves both to uvicorn's "auto", which takes uvloop and httptools when they are installed
    (requirements.txt) and asyncio and the pure-Python h11 otherwise: a third of the server's CPU per
    request is this event loop's (benchmarks/HISTORY.md), so the log says which one runs."""
    try:
        loop = type(demo.server.servers[0].get_loop()).__module__.split(".")[0]
        http = demo.server.config.http_protocol_class.__module__.rsplit(".", 1)[-1].removesuffix("_impl")
    except (AttributeError, IndexError):
        return "event loop and HTTP parser unknown"
    return f"{loop} event loop, {http} HTTP parser"


def launch(demo: gr.Blocks, direct_outputs: bool = True, **options) -> list[str]:
    """Start serving ``demo`` in the background (``demo.block_thread()`` waits), as the app always does; what
    ``tumortrace.server_hops`` applied to its server. Gradio's path checks resolve its configured folders
    once (``tumortrace.gradio_paths``), and the files it serves go out with ``Cache-Control: no-store``
    (``tumortrace.no_store``). With ``direct_outputs``, the output images the app just wrote are answered
    before Gradio's routes where no login is set (``tumortrace.output_files``, ``RECENT_OUTPUTS``).

    Gradio's /monitoring endpoints are off: the app has no use for its traffic dashboard, which would
    otherwise be reachable without a login on a local app, and ServingQueue skips their summary.

    Gradio's run history is off: by default Gradio 6 keeps a record of every prediction in the browser's
    localStorage (the uploaded file's name, which often carries a patient's, the probabilities, the decision,
    links to the images) with no expiry, and its /gradio_api/runs page offers to save future runs, the
    uploaded images among them, to a Hugging Face bucket. Off, it records nothing (the page itself removes what
    an earlier version of the app left in the browser: FORGET_RUN_HISTORY_JS; Gradio does not)."""
    if not gradio_paths.resolve_folders_once():
        log.warning("gradio.utils.is_in_or_equal is not the function tumortrace.gradio_paths repeats (another "
                    "Gradio than requirements.txt pins?): its path checks resolve every folder on every call")
    demo.launch(max_file_size=MAX_FILE_SIZE, show_error=True, prevent_thread_lock=True, footer_links=["api"],
                enable_monitoring=False, run_history=False, css=CSS, **options)
    if direct_outputs and not output_files.serve_recent_outputs(demo.app, RECENT_OUTPUTS):
        log.warning("Gradio's server is not the Starlette app tumortrace.output_files wraps (another Gradio than "
                    "requirements.txt pins?): the output images go through Gradio's file route")
    if not no_store.wrap_file_responses(demo.app):
        log.warning("Gradio's server is not the Starlette app tumortrace.no_store wraps (another Gradio than "
                    "requirements.txt pins?): browsers may keep the output images in their cache")
    return server_hops.fewer_hops(demo.app)


def stop_like_ctrl_c(signum: int, frame) -> None:
    """SIGTERM (`docker stop`, systemd) and SIGHUP (a closed terminal) would kill the app where it stands,
    leaving its folder of recent output images (and any upload being decoded) on disk. Raised in the main
    thread, this stops it as Ctrl-C does: Gradio closes its server, and the folder is removed."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> list[str]:
    """Install :func:`stop_like_ctrl_c` for SIGTERM and SIGHUP where they would kill the process (their default),
    not where they are ignored (``nohup`` ignores SIGHUP, and the app must then outlive its terminal).
    Returns the signals now handled; Windows has no SIGHUP."""
    handled = []
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, stop_like_ctrl_c)
            handled.append(name)
    return handled


def main(args: argparse.Namespace) -> int:
    stop_on_signals()
    allocator = malloc.tune_for_serving()  # before any serving thread starts
    try:
        auth = credentials(args)
    except (OSError, ValueError) as exc:
        log.error("cannot read credentials: %s", exc)
        return 2
    if args.share and not auth:
        log.error("refusing to open a share link without a login: set TUMORTRACE_AUTH=\"user:password\" "
                  "or pass --auth-file FILE")
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and not auth:
        log.warning("listening on %s WITHOUT a login: anyone who can reach this address can use the app; "
                    "set TUMORTRACE_AUTH for any deployment beyond this machine", args.host)
    torch.set_num_threads(threads_per_prediction(args.threads, args.concurrency))
    registry = build_registry(args.model, args.revision, fold_batchnorm=args.fold_batchnorm,
                              torchscript=args.torchscript)
    demo = build_app(registry, args.cam_method, args.concurrency, args.decode_ahead, args.classify_ahead,
                     args.wide_alone)
    hops = launch(demo, args.direct_outputs, server_name=args.host, server_port=args.port, share=args.share,
                  auth=auth)
    import_after_start("tumortrace.card")  # with scikit-learn: the threshold and calibration tables of a first view
    if args.share and not demo.share_url:
        log.error("the share link could not be opened (no connection to the share server); "
                  "still serving locally at http://%s:%d", args.host, args.port)
    log.info("serving %d model(s) at http://%s:%d%s; %d prediction(s) at once, %d torch thread(s) each; %s; %s; "
             "%s; %s; %s; %s; %s; %s", len(registry.models), args.host, args.port,
             f" and {demo.share_url}" if demo.share_url else "",
             args.concurrency, torch.get_num_threads(), describe_alone(args.wide_alone, registry),
             openmp.describe(_OPENMP_SPIN), malloc.describe(allocator),
             server_stack(demo), server_hops.describe(hops), gradio_paths.describe(),
             gradio_uploads.describe(demo, args.decode_ahead and args.classify_ahead),
             output_files.describe(demo.app))
    try:
        demo.block_thread()
    finally:
        if _OWN_TEMP_DIR:  # now, not after the server's threads end (atexit would wait for them)
            shutil.rmtree(_OWN_TEMP_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(get_args_parser().parse_args()))
