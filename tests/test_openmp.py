"""tumortrace.openmp: the OpenMP spin of a serving process, set before torch loads libgomp (each case that
loads torch in a fresh process: libgomp reads its environment once)."""
import json
import os
import sys

import pytest

from conftest import run_cli

FOREVER = 10**11  # spins: far longer than any sleep below

# A fresh process, with the operator's settings removed: shorten_spin before or after torch is imported, then
# how long the OpenMP workers spin after a parallel region while the caller sleeps 50 ms.
SPIN = """
import json, os, sys
for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
    os.environ.pop(name, None)
from tumortrace import openmp
loaded_first = openmp.loaded_runtimes()
if sys.argv[1] == "before":
    applied = openmp.shorten_spin(int(sys.argv[2]))
    import torch
else:
    import torch
    applied = openmp.shorten_spin(int(sys.argv[2]))
torch.set_num_threads(2)
print(json.dumps({"loaded_first": loaded_first, "applied": applied, "variable": os.environ.get("GOMP_SPINCOUNT"),
                  "loaded": openmp.loaded_runtimes(), "described": openmp.describe(applied),
                  "burnt_ms": openmp.idle_worker_cpu_ms(samples=5)}))
"""

needs_libgomp = pytest.mark.skipif(
    not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
    reason="torch's Linux wheels use libgomp, whose spinning worker needs a second core to be seen")


def _spin(when: str, count: int) -> dict:
    return json.loads(run_cli("-c", SPIN, when, str(count), check=True).stdout.splitlines()[-1])


@needs_libgomp
def test_the_spin_reaches_libgomp_when_set_before_torch_is_imported():
    before = _spin("before", FOREVER)
    assert before["loaded_first"] == [] and "libgomp" in before["loaded"]
    assert before["applied"] is True and before["variable"] == str(FOREVER)
    assert before["described"] == f"OpenMP idle threads spin {FOREVER} times before sleeping"
    assert before["burnt_ms"] > 25, before  # the worker spun through the caller's 50 ms sleep
    after = _spin("after", FOREVER)
    assert after["applied"] is False and after["variable"] is None  # too late: libgomp read its environment
    assert after["described"] == "OpenMP spin left as found"
    # libgomp's own default spins ~0.4–4.5 ms on the CI-class machines (benchmarks/openmp_spin.py)
    assert after["burnt_ms"] < 25, after


def test_the_operators_setting_is_left_alone(monkeypatch):
    from tumortrace import openmp

    monkeypatch.setattr(openmp, "loaded_runtimes", lambda: [])  # as before torch is imported
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert openmp.shorten_spin() is False and "GOMP_SPINCOUNT" not in os.environ
    assert openmp.describe(False) == "OpenMP spin as the environment sets it (OMP_WAIT_POLICY=passive)"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    assert openmp.shorten_spin() is False and os.environ["GOMP_SPINCOUNT"] == "123"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    assert openmp.shorten_spin() is True and os.environ["GOMP_SPINCOUNT"] == str(openmp.SPIN_COUNT)
    # what the log then says depends on the runtime torch loaded
    assert openmp.describe(True) == f"GOMP_SPINCOUNT={openmp.SPIN_COUNT} set; no OpenMP runtime loaded yet"
    monkeypatch.setattr(openmp, "loaded_runtimes", lambda: ["libiomp5"])
    assert openmp.describe(True) == \
        f"GOMP_SPINCOUNT={openmp.SPIN_COUNT} set, but torch's OpenMP is libiomp5, which ignores it"
    monkeypatch.setattr(openmp, "loaded_runtimes", lambda: ["libgomp"])
    assert openmp.describe(True) == f"OpenMP idle threads spin {openmp.SPIN_COUNT} times before sleeping"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setattr(sys, "platform", "darwin")  # torch's macOS wheels use LLVM's libomp
    monkeypatch.setattr(openmp, "loaded_runtimes", lambda: [])
    assert openmp.shorten_spin() is False and "GOMP_SPINCOUNT" not in os.environ


def test_runtimes_are_found_by_file_name(monkeypatch, tmp_path):
    from tumortrace import openmp

    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /site-packages/torch/lib/libgomp-a34b3233.so.1\n"
                    "7f02-7f03 r-xp 0 08:01 2 /usr/lib/libiomp5.so\n"
                    "7f04-7f05 r-xp 0 08:01 3 /usr/lib/libgompish.so\n7f06-7f07 rw-p 0 00:00 0\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(maps if path == "/proc/self/maps" else path,
                                                                         *a, **k))
    assert openmp.loaded_runtimes() == ["libgomp", "libiomp5"]


def test_nothing_is_set_once_libgomp_is_loaded(monkeypatch):
    import torch  # noqa: F401  (loads libgomp on Linux)

    from tumortrace import openmp
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if sys.platform.startswith("linux"):
        assert "libgomp" in openmp.loaded_runtimes()
    assert openmp.shorten_spin() is False and "GOMP_SPINCOUNT" not in os.environ
    assert openmp.describe(False) == "OpenMP spin left as found"


@pytest.mark.parametrize("module", ["app", "tumortrace.predict"])
def test_the_app_and_the_predict_cli_set_it_before_they_import_torch(module):
    """Both run each prediction's CAM and map right after its forward, on the caller's thread."""
    code = ("import importlib, json, os\n"
            "for name in ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY'): os.environ.pop(name, None)\n"
            f"module = importlib.import_module({module!r})\n"
            "import torch\n"
            "from tumortrace import openmp\n"
            "print(json.dumps([module._OPENMP_SPIN, os.environ.get('GOMP_SPINCOUNT'), openmp.SPIN_COUNT,"
            " 'libgomp' in openmp.loaded_runtimes()]))")
    applied, variable, count, libgomp = json.loads(run_cli("-c", code, check=True).stdout.splitlines()[-1])
    assert applied is True and variable == str(count) and libgomp is sys.platform.startswith("linux")
