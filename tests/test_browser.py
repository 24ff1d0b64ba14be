"""A person's path through the app in Debian's Chromium, driven by Playwright: upload, read label, screenshot.

Set TUMORTRACE_SCREENSHOTS=DIR to keep the screenshots (the README's come from this test).
"""
import os
import shutil
from pathlib import Path

import pytest

from apputil import running_app

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine (apt-get install chromium); .ci/run installs it", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

# Each word of every table cell shown: its pieces between spaces, hyphens, dashes and slashes (where a
# line may break) that the browser drew on more than one line.
SPLIT_WORDS_JS = """() => {
  const split = [];
  for (const cell of document.querySelectorAll('td, th')) {
    if (!cell.offsetParent) continue;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/[^\\s\\-\\/–—]+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        if (new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1) split.push(m[0]);
      }
    }
  }
  return split;
}"""
# The two output images as drawn: natural size, the box's size, and the scale the browser draws them at
# (object-fit: contain scales to the box; Gradio's own scale-down never enlarges).
SHOWN_SLICES_JS = """() => [...document.querySelectorAll('.slice-view img')].filter(i => i.naturalWidth > 0).map(i => {
  const r = i.getBoundingClientRect(), fit = getComputedStyle(i).objectFit;
  const scale = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
  return {natural: [i.naturalWidth, i.naturalHeight], box: [r.width, r.height], fit,
          drawn_scale: fit === 'contain' ? scale : fit === 'scale-down' ? Math.min(scale, 1) : null};
})"""
RUN_HISTORY_KEYS_JS = """() => [localStorage, sessionStorage].flatMap(store => Object.keys(store))
  .filter(key => key.startsWith('gradio:run-history:'))"""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_upload_classify_and_tabs(trained_model, manifest_data, tmp_path):
    shots = Path(os.environ.get("TUMORTRACE_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    image = sorted((manifest_data / "malignant" / "images").glob("*.png"))[0]
    model = os.environ.get("TUMORTRACE_SCREENSHOT_MODEL", str(trained_model))
    image = Path(os.environ.get("TUMORTRACE_SCREENSHOT_IMAGE", image))
    with running_app("--model", model, temp_dir=tmp_path) as (url, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        assert "not for diagnosis" in page.inner_text("body").lower() or "not a medical device" in page.inner_text("body").lower()
        page.set_input_files("input[type=file]", str(image))
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        body = page.inner_text("body")
        assert "malignant" in body and "benign" in body and "weights sha256" in body
        # No run history in the browser (Gradio 6 keeps one by default), and the page removes an earlier one.
        assert page.evaluate(RUN_HISTORY_KEYS_JS) == []
        page.evaluate("() => localStorage.setItem('gradio:run-history:v2:1234', '[{\"inputs\": [\"patient.dcm\"]}]')")
        page.reload(wait_until="networkidle")
        page.wait_for_timeout(500)
        assert page.evaluate(RUN_HISTORY_KEYS_JS) == []
        page.set_input_files("input[type=file]", str(image))
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "predict.png"), full_page=True)
        page.get_by_role("tab", name="Evaluation").click()
        page.get_by_text("Held-out test split:").wait_for(timeout=30_000)
        page.get_by_text("Calibration on the held-out test images").wait_for(timeout=30_000)
        assert "Brier score" in page.inner_text("body")
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "evaluation.png"), full_page=True)
        page.get_by_role("tab", name="About").click()
        page.get_by_text("Intended use").first.wait_for(timeout=30_000)
        page.screenshot(path=str(shots / "about.png"), full_page=True)
        # The tables' first columns were squeezed until words broke mid-word ("threshol|d"): Gradio's
        # markdown lets a line wrap anywhere, so a long row elsewhere could take their width.
        for width in (1280, 800):
            page.set_viewport_size({"width": width, "height": 1100})
            for tab in ("Predict", "Evaluation", "About"):
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(300)
                assert page.evaluate(SPLIT_WORDS_JS) == [], f"words broken across lines in the {tab} tab at {width} px"
        browser.close()
    assert (shots / "predict.png").stat().st_size > 10_000


def test_a_persons_click_finds_its_upload_classified_as_it_arrived(trained_model, manifest_data, tmp_path):
    """What the page sends on Classify (its model, the slider's opacity, frame 1) is exactly what the app
    classified the upload for while it waited for the click (tumortrace/ahead.py): the click takes that result."""
    image = sorted((manifest_data / "benign" / "images").glob("*.png"))[0]
    with running_app("--model", str(trained_model), temp_dir=tmp_path) as (url, proc), \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok):
            page.set_input_files("input[type=file]", str(image))
        page.wait_for_timeout(1000)  # a person, between choosing the file and clicking
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        browser.close()
        said = [line for line in proc.log_path.read_text().splitlines() if "ms in the handler" in line]
    assert len(said) == 1 and "classified as it arrived" in said[0], said


def test_an_example_slice_classifies(trained_model, tmp_path):
    """The shipped examples reach the handler as Gradio's own cached copies, not uploads: one click through."""
    example = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "examples").glob("busi_*.png"))[0]
    with running_app("--model", str(trained_model), temp_dir=tmp_path) as (url, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        page.get_by_text(example).first.click()
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        assert "Cannot use this file" not in page.inner_text("body")
        overlay = page.locator("img[src*='gradcam.jpg']")
        overlay.wait_for(timeout=30_000)
        assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", overlay.element_handle())
        browser.close()


def test_another_frame_of_an_uploaded_series_is_chosen_without_uploading_it_again(trained_model, tmp_path):
    """The browser sends the same upload (whose file the first request deleted) with another frame number."""
    from hostile import write_case

    series = write_case(tmp_path, "multiframe.dcm")  # 3 frames
    other = write_case(tmp_path, "mr_window.dcm")  # one frame
    with running_app("--model", str(trained_model), temp_dir=tmp_path) as (url, _), \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        page.set_input_files("input[type=file]", str(series))
        frame_box = page.get_by_label("Frame of a multi-frame DICOM or multi-page TIFF (1 = first)")
        for frame in (1, 3):
            frame_box.fill(str(frame))
            page.get_by_role("button", name="Classify").click()
            page.get_by_text(f"frame {frame} of 3 used").wait_for(timeout=60_000)
        # A slice smaller than its 380 px box (MR slices are often 256² or less) is enlarged to fill it, its
        # aspect kept, not left at its own size in the middle.
        page.wait_for_function("() => [...document.querySelectorAll('.slice-view img')]"
                               ".filter(i => i.complete && i.naturalWidth > 0).length == 2", timeout=30_000)
        shown = page.evaluate(SHOWN_SLICES_JS)
        assert len(shown) == 2 and all(s["natural"][1] < 100 and s["box"][1] > 300 for s in shown), shown
        assert all(s["drawn_scale"] > 3 for s in shown), shown
        downloads = page.eval_on_selector_all(".slice-view a[download]", "links => links.map(a => a.download)")
        model = trained_model.name
        assert downloads == [f"multiframe_frame3_gradcam_malignant_{model}.jpg", "multiframe_frame3_as_seen.png"]
        frame_box.fill("5")
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("frame 5 was asked for, but the file has 3 frames").first.wait_for(timeout=60_000)
        # the answer for frame 3 went when this request started: no decision beside the error
        body = page.inner_text("body")
        assert "frame 3 of 3 used" not in body and "Decision at the model's validated threshold" not in body
        for change in (lambda: frame_box.fill("1"), lambda: page.get_by_role("button", name="Clear").first.click()):
            frame_box.fill("2")
            page.get_by_role("button", name="Classify").click()
            page.get_by_text("frame 2 of 3 used").wait_for(timeout=60_000)
            change()  # another frame, or the file removed: the answer shown does not belong to it any more
            page.get_by_text("frame 2 of 3 used").wait_for(state="detached", timeout=10_000)
            assert "Decision at the model's validated threshold" not in page.inner_text("body")
        page.set_input_files("input[type=file]", str(other))  # and a new file after that is classified
        frame_box.fill("1")
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        browser.close()


def _drag_slider(page, slider, to: float) -> None:
    """Drag ``slider`` (a range input) as a person does, from its thumb to fraction ``to`` of its track."""
    box = slider.bounding_box()  # measured now: the page's layout moves once an answer is shown
    start = (float(slider.input_value()) - float(slider.get_attribute("min"))) / (
        float(slider.get_attribute("max")) - float(slider.get_attribute("min")))
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * start, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * to, y, steps=5)
    page.mouse.up()


def test_moving_the_opacity_slider_redraws_the_overlay_of_the_answer_shown(trained_model, manifest_data, tmp_path):
    """Before any answer, moving the slider classifies nothing; with one shown, dragging it redraws the
    overlay as it moves and at the value it is let go at, beside the same decision, without running the
    model again; so do a typed value and the arrow keys; once the file is removed and another chosen, there
    is nothing to redraw."""
    images = sorted((manifest_data / "malignant" / "images").glob("*.png"))
    with running_app("--model", str(trained_model), temp_dir=tmp_path) as (url, proc), \
            sync_api.sync_playwright() as p:
        def said(what: str) -> list[str]:
            return [line for line in proc.log_path.read_text().splitlines() if what in line]

        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, wait_until="networkidle")
        slider = page.get_by_label("range slider for Grad-CAM opacity")
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok):
            page.set_input_files("input[type=file]", str(images[0]))
        page.wait_for_timeout(500)  # the file shown: the layout below it has moved
        _drag_slider(page, slider, 0.8)
        page.wait_for_timeout(1000)
        assert float(slider.input_value()) == pytest.approx(0.8, abs=0.05) and not said("ms in the handler")
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("Decision at the model's validated threshold").wait_for(timeout=60_000)
        overlay = page.locator("img[src*='gradcam.jpg']")
        first, decision = overlay.get_attribute("src"), page.get_by_text("Decision at the model's").inner_text()
        _drag_slider(page, slider, 0.1)
        page.wait_for_function("(src) => { const i = document.querySelector(\"img[src*='gradcam.jpg']\");"
                               " return i && i.src !== src && i.complete && i.naturalWidth > 0; }", arg=first,
                               timeout=30_000)
        page.wait_for_timeout(1000)
        assert float(slider.input_value()) == pytest.approx(0.1, abs=0.05)
        redrawn = said("overlay redrawn at opacity")
        assert redrawn and redrawn[-1].split("opacity ")[1].startswith(f"{float(slider.input_value()):.2f}")
        assert len(said("predict:")) == 1  # the model ran once: for the Classify
        # Still an image with its download button, not an upload box (an event's input is interactive in
        # Gradio unless it says otherwise).
        assert page.eval_on_selector_all(".slice-view a[download]", "links => links.length") == 2
        assert page.locator(".slice-view input[type=file]").count() == 0
        assert page.get_by_text("Decision at the model's").inner_text() == decision
        number = page.get_by_label("number input for Grad-CAM opacity")
        for change, value in ((lambda: (number.fill("0.6"), number.press("Enter")), "0.60"),
                              (lambda: (slider.focus(), page.keyboard.press("ArrowLeft")), "0.55")):
            change()
            page.wait_for_timeout(1000)
            assert f"overlay redrawn at opacity {value}," in said("overlay redrawn")[-1]
        page.get_by_role("button", name="Clear").first.click()  # the file removed: the answer and overlay go
        page.get_by_text("Decision at the model's validated threshold").wait_for(state="detached", timeout=10_000)
        assert overlay.count() == 0
        with page.expect_response(lambda r: "/gradio_api/upload" in r.url and r.ok):
            page.set_input_files("input[type=file]", str(images[1]))
        page.wait_for_timeout(500)
        count = len(said("ms in the handler"))
        _drag_slider(page, slider, 0.5)
        page.wait_for_timeout(1000)
        assert len(said("ms in the handler")) == count and overlay.count() == 0
        browser.close()
