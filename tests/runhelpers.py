"""Helpers shared by the subprocess-driven runner tests (test_runner.py, test_reliability.py).

Runs go through ``python -m jaxvae.main`` in a subprocess with the environment of the ``run_env`` fixture
(tests/conftest.py: one persistent JAX compilation cache for the session). The uninterrupted RESUME run is
the ``resume_reference`` fixture there, computed once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# XLA flags of every test process: LLVM optimizations off, since compiling the tests' tiny programs is most of
# the suite's time. JAXVAE_TEST_XLA_OPT=default keeps XLA's own level. Added to this process's environment
# here, before anything imports JAX (conftest.py imports this module first), so pytest and every subprocess
# run inherit them.
XLA_TEST_FLAGS = "" if os.environ.get("JAXVAE_TEST_XLA_OPT") == "default" else "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()

from jaxvae.experiment.checkpoints import SLOW_SAVE_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def env_with_xla_flags(*flags: str, base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with XLA_FLAGS = the test flags plus ``flags`` only (e.g.
    a forced device count; not the parent's forced count)."""
    env = dict(os.environ if base is None else base)
    env["XLA_FLAGS"] = " ".join(f for f in (XLA_TEST_FLAGS, *flags) if f)
    return env
QUICKSTART = "experiments/quickstart.py"

# quickstart on the embedded digits (1397 train examples, batch 50: 27 steps an epoch) with a tiny
# evaluation. Every quickstart run in the tests shares these settings (they fix the compiled shapes), so
# later runs reuse the first one's compiled programs from the cache.
SMALL = ["--config.train.steps_per_dispatch=2", "--config.eval.ks=(1,5,50)", "--config.eval.max_examples=100",
         "--config.eval.valid_k=5", "--config.eval.valid_examples=100", "--config.train.log_every_steps=2",
         "--config.train.checkpoint_every_epochs=1"]
NO_IMAGES = "--config.eval.images=False"
# 3 epochs, 81 steps: checkpoints at 27, 54 (with validation, also the best) and 81.
RESUME = [*SMALL, "--config.train.num_epochs=3", "--config.train.eval_every_epochs=2", NO_IMAGES]


def cmd(workdir, *overrides, config=QUICKSTART) -> list[str]:
    return [sys.executable, "-m", "jaxvae.main", f"--config={config}", f"--workdir={workdir}", *overrides]


def run_main(env, workdir, *overrides, config=QUICKSTART, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(workdir, *overrides, config=config), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_main(env, workdir, *overrides, slow_save=None) -> tuple[subprocess.Popen, Path, Path]:
    """Starts a run in the background; stdout/stderr go to files (no pipe to fill up). ``slow_save``:
    seconds by which each checkpoint commit is delayed (the JAXVAE_TEST_SLOW_SAVE_S test hook)."""
    workdir = Path(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.parent.glob(f"{workdir.name}.launch*.out")))
    out, err = (workdir.parent / f"{workdir.name}.launch{n}.{s}" for s in ("out", "err"))
    extra = {SLOW_SAVE_ENV: str(slow_save)} if slow_save else {}
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd(workdir, *overrides), cwd=ROOT, env={**env, **extra}, stdout=fo,
                                stderr=fe, text=True)
    return proc, out, err


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
