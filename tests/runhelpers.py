"""Helpers shared by the subprocess-driven runner tests (test_runner.py, test_reliability.py)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest


def status(workdir) -> dict:
    try:
        return json.loads((Path(workdir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 240.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run exited (code {proc.returncode}) before {what}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def check_ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"exit code {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr


def step_dirs(workdir, which="latest") -> list[int]:
    d = Path(workdir) / "checkpoints" / which
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def load_checkpoint(workdir, step: int, which="latest"):
    """The raw saved tree of a step (no template): dicts of numpy arrays."""
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    try:
        return ckptr.restore((Path(workdir) / "checkpoints" / which / str(step) / "default").absolute())
    finally:
        ckptr.close()


def assert_trees_equal(a, b) -> None:
    import jax

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
