"""tumortrace.gradio_paths: Gradio's path checks give the same answers with its configured folders resolved once."""
import os
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")
import gradio.processing_utils  # noqa: E402
import gradio.utils  # noqa: E402

import app  # noqa: E402
from apputil import free_port  # noqa: E402
from tumortrace import gradio_paths  # noqa: E402


@pytest.fixture
def tree(tmp_path):
    """allowed/ (with a file, a sub-folder, a link to outside, a link to inside), allowed_link -> allowed,
    allowed_sibling/ (shares the name's prefix), outside/."""
    allowed, outside, sibling = tmp_path / "allowed", tmp_path / "outside", tmp_path / "allowed_sibling"
    for folder in (allowed / "sub", outside, sibling):
        folder.mkdir(parents=True)
    for f in (allowed / "a.png", allowed / "sub" / "b.png", outside / "secret.txt", sibling / "c.png"):
        f.write_bytes(b"x")
    (allowed / "to_outside").symlink_to(outside / "secret.txt")
    (allowed / "to_inside").symlink_to(allowed / "sub" / "b.png")
    (tmp_path / "allowed_link").symlink_to(allowed, target_is_directory=True)
    return tmp_path


def cases(root: Path):
    allowed = root / "allowed"
    files = [allowed / "a.png", allowed / "sub" / "b.png", allowed, allowed / "sub" / ".." / "a.png",
             allowed / ".." / "outside" / "secret.txt", allowed / "to_outside", allowed / "to_inside",
             root / "allowed_sibling" / "c.png", root / "outside" / "secret.txt", root / "allowed_link" / "a.png",
             allowed / "not_there.png", root / "nowhere" / "x.png"]
    folders = [allowed, root / "allowed_link", allowed / "sub", root / "outside", root / "allowed_sibling",
               allowed / "a.png"]
    for f in files:
        for d in folders:
            for as_text in (False, True):
                yield (str(f) if as_text else f), (str(d) if as_text else d)


def test_the_same_answers_as_gradios_own_check(tree):
    gradios = gradio_paths.gradio_function()
    assert gradios is not gradio_paths.is_in_or_equal
    answers = [(f, d, gradio_paths.is_in_or_equal(f, d), gradios(f, d)) for f, d in cases(tree)]
    assert all(ours == theirs for _, _, ours, theirs in answers), [a for a in answers if a[2] != a[3]]
    assert sum(ours for *_, ours, _ in answers) >= 20 and sum(not ours for *_, ours, _ in answers) >= 60
    # relative paths are taken from the working directory, as Gradio's are
    here = Path.cwd()
    try:
        os.chdir(tree)
        assert gradio_paths.is_in_or_equal("allowed/a.png", "allowed") == gradios("allowed/a.png", "allowed") is True
        assert (gradio_paths.is_in_or_equal("allowed/to_outside", "allowed")
                is gradios("allowed/to_outside", "allowed") is False)
    finally:
        os.chdir(here)


def test_the_file_asked_about_is_resolved_on_every_call_and_the_folder_once(tree, monkeypatch):
    allowed = tree / "allowed"
    link = allowed / "moving"
    link.symlink_to(allowed / "a.png")
    assert gradio_paths.is_in_or_equal(link, allowed)
    link.unlink()
    link.symlink_to(tree / "outside" / "secret.txt")  # the same name now leads outside
    assert not gradio_paths.is_in_or_equal(link, allowed)

    deep = tree.joinpath("q", "r", "s", "t", "u")  # a configured folder many components down, as site-packages
    deep.mkdir(parents=True)
    calls = []
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda p, *a, **k: calls.append(str(p)) or real_lstat(p, *a, **k))

    def lstat_calls(check) -> list[str]:
        del calls[:]
        check(allowed / "a.png", deep)
        return list(calls)

    lstat_calls(gradio_paths.is_in_or_equal)  # the folder's first check resolves it
    in_deep = [c for c in lstat_calls(gradio_paths.is_in_or_equal) if c.startswith(str(tree / "q"))]
    assert in_deep == []  # resolved once
    assert any(c.startswith(str(tree / "q")) for c in lstat_calls(gradio_paths.gradio_function()))  # Gradio: again
    assert any(c.endswith("a.png") for c in lstat_calls(gradio_paths.is_in_or_equal))  # the file: every call


def test_it_replaces_gradios_function_where_gradio_refers_to_it_and_only_that_function(monkeypatch):
    assert gradio_paths.resolve_folders_once() and gradio_paths.resolve_folders_once()  # idempotent
    assert gradio.utils.is_in_or_equal is gradio_paths.is_in_or_equal
    assert gradio.processing_utils.is_in_or_equal is gradio_paths.is_in_or_equal  # imported by name
    assert gradio_paths.applied() and "resolved once" in gradio_paths.describe()

    def another(path_1, path_2):  # a Gradio whose check says something else
        return False
    for module in (gradio.utils, gradio.processing_utils):
        monkeypatch.setattr(module, "is_in_or_equal", another)
    assert not gradio_paths.resolve_folders_once()
    assert gradio.utils.is_in_or_equal is another and gradio.processing_utils.is_in_or_equal is another
    assert not gradio_paths.applied() and gradio_paths.describe() == "Gradio's path checks as they are"


@pytest.mark.slow
def test_the_served_app_still_serves_only_what_it_may(tree):
    import httpx

    allowed = tree / "allowed"
    with gr.Blocks() as demo:
        gr.Markdown("files")
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, quiet=True, allowed_paths=[str(allowed)])
    url = f"http://127.0.0.1:{port}/gradio_api/file="
    try:
        assert gradio_paths.applied()
        with httpx.Client(timeout=30) as http:
            for _ in range(2):  # the second time with the folders' resolutions cached
                assert http.get(url + str(allowed / "a.png")).status_code == 200
                assert http.get(url + str(allowed / "sub" / "b.png")).status_code == 200
                assert http.get(url + str(allowed / "to_inside")).status_code == 200
                for refused in (tree / "outside" / "secret.txt", allowed / "to_outside",
                                tree / "allowed_sibling" / "c.png",
                                allowed / "sub" / ".." / ".." / "outside" / "secret.txt"):
                    assert http.get(url + str(refused)).status_code == 403, refused
    finally:
        demo.close()
