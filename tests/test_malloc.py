"""tumortrace.malloc: glibc's malloc settings for serving, each in a fresh process (they are process-wide)."""
import json
import os
import platform

import pytest

from conftest import run_cli

GLIBC = platform.libc_ver()[0] == "glibc"
OPERATOR_SETTINGS = [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]

# A forward pass in miniature: glibc's thresholds start where freeing one mmapped 1 MiB block leaves them
# (mmap 1 MiB, trim 2 MiB), then eight 900 KiB buffers are made, written and freed, round after round.
ROUNDS = """
import json, resource, sys
import numpy as np
from tumortrace.malloc import tune_for_serving
applied = tune_for_serving() if sys.argv[1] == "tuned" else {}
block = np.ones(2**20, np.uint8); del block
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffers = [np.ones(900 * 1024, np.uint8) for _ in range(8)]
    del buffers
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _rounds(mode: str) -> dict:
    proc = run_cli("-c", ROUNDS, mode, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's; elsewhere tune_for_serving changes nothing")
@pytest.mark.skipif(bool(OPERATOR_SETTINGS), reason=f"this environment sets {OPERATOR_SETTINGS}: the default "
                                                     "allocator this test compares with is not glibc's own")
def test_freed_buffers_are_reused_without_faulting_them_in_again():
    default, tuned = _rounds("default"), _rounds("tuned")
    # With glibc's own thresholds the 7 MiB freed at the top of the heap exceed the 2 MiB trim threshold and go
    # back to the OS each round: every round faults its buffers in again (~1,300 pages of 4 KiB).
    assert min(default["faults"][1:]) > 1000, default
    assert tuned["applied"] == {"arena_max": True, "mmap_threshold": True, "trim_threshold": True}
    assert tuned["faults"][0] > 1000 and sum(tuned["faults"][1:]) < 100, tuned  # only the first round faults


def test_a_setting_the_environment_gives_is_left_alone():
    code = ("import json, os; from tumortrace import malloc; "
            "[os.environ.pop(k) for k in list(os.environ) if k.startswith('MALLOC_') or k == 'GLIBC_TUNABLES']; "
            "first = malloc.tune_for_serving(); "
            "os.environ['MALLOC_ARENA_MAX'] = '4'; "
            "os.environ['GLIBC_TUNABLES'] = 'glibc.malloc.trim_threshold=1048576'; "
            "print(json.dumps([first, malloc.tune_for_serving()]))")
    first, second = json.loads(run_cli("-c", code, check=True).stdout.splitlines()[-1])
    assert first == dict.fromkeys(("arena_max", "mmap_threshold", "trim_threshold"), GLIBC)  # mallopt answers 1
    assert second == {"arena_max": False, "mmap_threshold": GLIBC, "trim_threshold": False}


def test_the_log_says_which_settings_were_applied():
    from tumortrace.malloc import describe
    assert describe({"arena_max": True, "mmap_threshold": False, "trim_threshold": True}) == \
        "glibc malloc set for serving (arena_max, trim_threshold)"
    assert describe({"arena_max": False, "mmap_threshold": False, "trim_threshold": False}) == \
        "malloc settings left as found"
