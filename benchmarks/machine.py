"""One line naming the CPU a benchmark ran on, for its header.

The same script gives other figures on another CPU, and this project's 2-core machines are not all alike:
a 2048² fp32 matmul ran at 374 GFLOP/s in one session and at 159 on an AMD EPYC in the next, where
Lite0's app path/served forward went from a median 1.35 to 1.25. A figure is only comparable with one
from the same CPU. Reads /proc/cpuinfo and never imports torch (load.py and openmp_spin.py must set
libgomp's spin first).
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def _first_cpu(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def vector_isa(flags: set[str]) -> str:
    """The widest x86 vector extension the CPU reports (what oneDNN and torch's kernels dispatch on)."""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return "no AVX"


def describe(cpuinfo: str | None = None) -> str:
    """E.g. "AMD EPYC (family 25 model 17, AVX-512), 2 CPUs available": vendor's model name, the family and
    model numbers that tell one generation from another where a hypervisor shortens the name, and the
    CPUs this process may run on."""
    try:
        text = CPUINFO.read_text() if cpuinfo is None else cpuinfo
    except OSError:
        text = ""
    fields = _first_cpu(text)
    name = fields.get("model name") or fields.get("Model Name") or fields.get("cpu model")
    details = []
    if "cpu family" in fields and "model" in fields:
        details.append(f"family {fields['cpu family']} model {fields['model']}")
    if "flags" in fields:
        details.append(vector_isa(set(fields["flags"].split())))
    head = name or platform.processor() or platform.machine() or "unknown CPU"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch = sys.modules.get("torch")  # named only where the script has loaded it already
    capability = ""
    if torch is not None:
        try:
            capability = f", torch kernels {torch.backends.cpu.get_cpu_capability()}"
        except Exception:  # older torch: the line still names the CPU
            capability = ""
    detail = f" ({', '.join(details)})" if details else ""
    return f"{head}{detail}, {cpus} CPUs available{capability}"
