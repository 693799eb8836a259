"""Stored numbers of the code before the architecture's round two (issue 27): a solo run, a vectorized
group of three (one member diverges) and ``load_run(...).evaluate()``, as test_vectorized's ``runs`` fixture
trains them. The refactored host loop must reproduce them bit for bit.

XLA's CPU code depends on the host's instruction set, so the numbers are exact on a CPU with the flags of the
one that stored them, and compared to 1e-5 (relative) elsewhere; the machine is recorded beside them.
Regenerate (only on purpose, when a change of the numbers is intended and said in the commit):
``python tests/stored_numbers.py`` (it writes tests/data/stored_numbers.json).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np

WRITE_ENV = "JAXVAE_WRITE_STORED_NUMBERS"  # set to 1: the test writes the record instead of comparing
STORED = Path(__file__).resolve().parent / "data" / "stored_numbers.json"
# results.json fields that measure time or the machine, not the mathematics
_VOLATILE = {"seconds", "eval_wall_time_s", "wall_time_s", "examples_per_s", "devices", "time"}


def _is_volatile(key: str) -> bool:
    return key in _VOLATILE


def numbers(tree, prefix: str = "") -> dict:
    """Every numeric leaf of a results-like tree, by dotted path, time and machine fields left out."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not _is_volatile(str(k)):
                out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(numbers(v, f"{prefix}{i}."))
    elif isinstance(tree, (bool, int, float, np.floating, np.integer)) or (
            isinstance(tree, np.ndarray) and tree.ndim == 0):
        out[prefix[:-1]] = float(tree)
    return out


def params_digest(params) -> str:
    import jax

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def cpu_signature() -> str:
    """The CPU model and its instruction-set flags (what XLA's CPU code generation depends on)."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        fields = {k.strip(): v for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
        model, flags = fields.get("model name", "").strip(), fields.get("flags", "").split()
    except OSError:
        model, flags = platform.processor(), []
    return model + " | " + hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


def jaxlib_version() -> str:
    """XLA's code generation (so the last bits of every number) also changes between jaxlib releases."""
    import jaxlib

    return jaxlib.__version__


def workdir_numbers(config, workdir: Path, final_params) -> dict:
    """The numbers of one finished (or failed) run's workdir: results.json, the training curve and the final
    parameters' digest. ``final_params(config, workdir) -> (params tree, step)``."""
    workdir = Path(workdir)
    out = {"status": json.loads((workdir / "status.json").read_text())["status"]}
    if (workdir / "results.json").exists():
        results = json.loads((workdir / "results.json").read_text())
        results.pop("config")  # the settings, not numbers the code computed (their layout may change)
        out["results"] = numbers(results)
    curve = workdir / "metrics.jsonl"
    out["metrics"] = ([numbers(json.loads(line)) for line in curve.read_text().splitlines()] if curve.exists()
                      else None)
    state, step = final_params(config, workdir)
    out["step"] = step
    out["params_sha256"] = params_digest(state["params"]) if state is not None else None
    return out


def collect(runs, final_params) -> dict:
    """The stored record from test_vectorized's ``runs`` fixture."""
    from jaxvae import load_run

    solo0 = runs["root"] / "solo0"
    return {
        "cpu": cpu_signature(),
        "jaxlib": jaxlib_version(),
        "solo": workdir_numbers(runs["configs"][0], solo0, final_params),
        "group": [workdir_numbers(c, wd, final_params) for c, wd in zip(runs["configs"], runs["group_dirs"])],
        "evaluate": numbers(load_run(solo0, "latest").evaluate()),
    }


def compare(got, want, path: str = "", exact: bool = True) -> list[str]:
    """Differences between two records (empty: equal); floats exactly, or to 1e-5 when not ``exact``."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got} vs {sorted(want)}"]
        return [d for k in want if k not in ("cpu", "jaxlib") for d in compare(got[k], want[k], f"{path}.{k}", exact)]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got} vs {want}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{path}.{i}", exact)]
    if isinstance(want, float) and isinstance(got, float) and not exact:
        same = (np.isnan(got) and np.isnan(want)) or abs(got - want) <= 1e-5 * max(1.0, abs(want))
        return [] if same else [f"{path}: {got!r} vs {want!r}"]
    if isinstance(want, str) and path.endswith("params_sha256") and not exact:
        return []
    same = got == want or (isinstance(want, float) and np.isnan(want) and np.isnan(got))
    return [] if same else [f"{path}: {got!r} vs {want!r}"]


if __name__ == "__main__":
    import os
    import subprocess
    import sys

    env = {**os.environ, WRITE_ENV: "1"}
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-n", "0", "-o", "addopts=",
                              str(Path(__file__).parent / "test_vectorized.py"), "-k", "stored_numbers"], env=env))
