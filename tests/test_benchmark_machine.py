"""benchmarks/machine.py: the CPU named in every benchmark's header, so figures from different machines are not
compared as if they were one."""
import os
import sys

import pytest

from conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "benchmarks"))

import machine  # noqa: E402

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: a second CPU, not read
"""
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 avx avx2 fma
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("cpuinfo, expected", [
    (INTEL, "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (family 6 model 143, AVX-512), "),
    (AMD_AVX2, "AMD EPYC 7B12 (family 23 model 49, AVX2), "),
])
def test_the_line_names_the_first_cpu_its_generation_and_widest_vectors(cpuinfo, expected):
    line = machine.describe(cpuinfo)
    assert line.startswith(expected), line
    assert "a second CPU" not in line
    assert f", {len(os.sched_getaffinity(0))} CPUs available" in line


def test_a_cpu_without_a_model_name_is_still_named():
    line = machine.describe(ARM)
    assert not line.startswith(" ") and not line.startswith("(") and "CPUs available" in line
    assert "family" not in line  # no invented numbers


def test_it_names_torchs_kernels_only_where_torch_is_loaded_and_never_loads_it():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import machine; line = machine.describe(); "
            "print('torch' in sys.modules, 'torch kernels' in line); import torch; "
            "print('torch kernels ' + torch.backends.cpu.get_cpu_capability() in machine.describe())")
    out = run_cli("-c", code, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "True"]
