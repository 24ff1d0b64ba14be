"""What every benchmark that serves the app in its own process sets up first, before Gradio is imported."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def work_folder(name: str) -> Path:
    """A new folder for the app's files (its GRADIO_TEMP_DIR, which Gradio reads when it is imported) and the
    clients' (``load.exit_after_in_process_run`` removes it); the repository, benchmarks/ and tests/ become
    importable."""
    work = Path(tempfile.mkdtemp(prefix=f"tumortrace-{name}-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))
    for folder in (ROOT, ROOT / "benchmarks", ROOT / "tests"):
        sys.path.insert(0, str(folder))
    return work
