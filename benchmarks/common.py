"""What every benchmark shares: the machine description written beside each figure, and the timers.

Scripts are run as ``python benchmarks/X.py`` (their folder is then on ``sys.path``, so ``import common``
works) with jaxvae installed (``pip install -e .``) or on ``PYTHONPATH``.

Machine: ``device_info()`` (CPU model and flags, cores, load average, date, jax version and devices,
XLA_FLAGS, memory, torch version) goes into each result file; ``finish(info)`` adds the load average at
the end; ``machine_line(info)`` is the one-line form for text output.

Timing: every timed call must block (``jax.block_until_ready``) before it returns. ``timed`` repeats one
call (wall and process-CPU seconds of each); ``rate_record`` turns them into median/best rates;
``best_time`` is the best wall time of repeats; ``round_robin`` times several variants interleaved, so
that a shared machine's changing load hits all of them alike.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"  # the result files quoted in benchmarks/README.md and docs/


# -- machine ---------------------------------------------------------------------------------------
def num_threads() -> int:
    """Cores this process may run on (what XLA's CPU thread pool is sized to)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    flags = _cpuinfo("flags") or ""
    return sorted(f for f in flags.split() if f.startswith(("avx", "fma", "amx")))


def device_info() -> dict:
    """The machine a figure was measured on (imports jax: call it after any XLA_FLAGS change)."""
    import jax

    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "jax_devices": [str(d) for d in jax.devices()],
        "platform": jax.default_backend(),
        "jax_version": jax.__version__,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "os_cpu_count": os.cpu_count(),
        "threads_available": num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg_start": list(os.getloadavg()),
        "python": platform.python_version(),
    }
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_total_gib"] = round(int(mem) / 1024**2, 1)
    except (OSError, IndexError, ValueError):
        pass
    try:
        from importlib.metadata import version
        info["torch"] = version("torch")
    except Exception:  # noqa: BLE001 - not installed
        info["torch"] = None
    return info


def finish(info: dict) -> dict:
    """Adds the load average at the end of the measurement to ``info``."""
    info["loadavg_end"] = list(os.getloadavg())
    return info


def machine_line(info: dict) -> str:
    """``info`` in one comment line for text output."""
    return (f"# {info['date']} CPU: {info['cpu_model']}, {info['threads_available']} threads "
            f"({info['os_cpu_count']} cores); load {info['loadavg_start']}; jax {info['jax_version']} "
            f"{info['jax_devices']}; XLA_FLAGS={info['xla_flags']!r}")


# -- timing ----------------------------------------------------------------------------------------
def time_once(fn):
    """``(result, wall seconds, process-CPU seconds)`` of one call of ``fn()`` (fn must block)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def timed(fn, reps: int):
    """Run ``fn()`` reps times; returns lists of wall and process-CPU seconds (fn must block)."""
    walls, cpus = [], []
    for _ in range(reps):
        _, w, c = time_once(fn)
        walls.append(w)
        cpus.append(c)
    return walls, cpus


def rate_record(work: float, walls, cpus, unit: str) -> dict:
    """Median/best rates of ``work`` units per dispatch."""
    med, cpu = float(np.median(walls)), float(np.median(cpus))
    return {
        f"{unit}_per_s": work / med,
        f"{unit}_per_s_best": work / min(walls),
        f"{unit}_per_cpu_s": work / cpu,
        "seconds_median": med,
        "seconds": [round(w, 4) for w in walls],
        "cpu_over_wall": cpu / med,
    }


def best_time(fn, repeats: int, setup=None) -> float:
    """Best wall seconds of ``repeats`` calls of ``fn()`` (fn must block); with ``setup``, each call is
    ``fn(setup())`` and setup is not timed (e.g. a fresh copy of a donated state)."""
    best = float("inf")
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t = time.perf_counter()
        fn(arg) if setup is not None else fn()
        best = min(best, time.perf_counter() - t)
    return best


def round_robin(fns: dict, rounds: int, alternate: bool = False):
    """Time the variants ``{name: fn}`` interleaved: each round calls every fn once (in reverse order on
    odd rounds with ``alternate``). Returns ``({name: [wall s]}, {name: [CPU s]}, {name: last result})``;
    each fn must block."""
    walls = {n: [] for n in fns}
    cpus = {n: [] for n in fns}
    last = {}
    for r in range(rounds):
        order = list(fns.items())
        if alternate and r % 2:
            order.reverse()
        for name, fn in order:
            last[name], w, c = time_once(fn)
            walls[name].append(w)
            cpus[name].append(c)
    return walls, cpus, last
