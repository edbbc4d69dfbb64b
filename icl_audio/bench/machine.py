"""What a measurement ran on, and this process's memory: shared by the measuring benches (speed,
episode speed, codec, memory, quantisation), so that every figure says the CPU, the threads and how
busy the machine was (it may be shared: timings are ratios within a run, reported with the load)."""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def status_mb(key: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile) in MB; None where absent."""
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current resident size (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, kB elsewhere


def load_average() -> float:
    """The 1-minute load average (how busy the machine is: it may be shared)."""
    return round(os.getloadavg()[0], 2)


def run_facts(load_start: float) -> dict:
    """The facts every measuring bench reports beside its figures (JSON-ready)."""
    import torch

    return {
        "peak_rss_mb": round(maxrss_mb(), 1),
        "threads": torch.get_num_threads(),
        "loadavg_1min_start": load_start,
        "loadavg_1min_end": load_average(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "machine": platform.machine(),
    }
