"""The prepared accelerator check (benchmarks/device_check.sh, issue 31) and the device machine's own Python.

* every jaxvae module imports with only the device image's packages plus the carried wheels
  (benchmarks/device_env.py --check-imports; the guard itself is checked by taking one package away);
* the carried-wheel list is the same in the fetch script, device_env.py and pyproject's pins;
* the check's --tiny mode on CPU: a default-run subset (env, ais, bf16, hier, in two tests) and, behind -m slow,
  every step (its figures mean nothing; this keeps the check from rotting).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import device_env  # noqa: E402


def _check_imports(*extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_env.py"), "--check-imports", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_jaxvae_imports_need_only_the_device_packages():
    """A jaxvae module that starts importing (at import time) a package that the device image lacks and the
    wheels do not carry fails here; the three TFDS builder modules may need tensorflow_datasets only. Taking
    ml_collections away shows that the guard refuses what is not allowed."""
    p = _check_imports()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 need tensorflow_datasets only" in p.stdout and "0 failed" in p.stdout, p.stdout
    p = _check_imports("--without", "ml_collections")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED jaxvae.experiment.configs" in p.stdout and "refused" in p.stdout, p.stdout


def test_carried_wheels_agree_with_the_fetch_script_and_pyproject():
    script = (ROOT / "benchmarks" / "fetch_device_wheels.sh").read_text()
    wheels = re.search(r"^WHEELS=\((.*)\)$", script, re.M).group(1).split()
    assert sorted(wheels) == sorted(device_env.CARRIED.values())
    deps = (ROOT / "pyproject.toml").read_text()
    for pin in wheels:  # each carried version is one pyproject.toml allows (checked on its lower bound)
        name, version = pin.split("==")
        m = re.search(rf'"{re.escape(name)}>=([0-9.]+)', deps, re.I)
        assert m, f"{name} is not a dependency in pyproject.toml"
        lower = tuple(int(v) for v in m.group(1).split("."))
        assert tuple(int(v) for v in version.split(".")) >= lower, pin
    # nothing carried is already in the image, and what is neither is the TFDS pair alone
    assert not set(device_env.CARRIED) & set(device_env.IMAGE_PACKAGES)
    assert set(device_env.TFDS_MODULES.values()) == {"tensorflow_datasets"}


def _device_check(tmp_path, run_env, *steps) -> dict:
    env = dict(run_env, PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path / "out"), "--tiny"]
    p = subprocess.run([*cmd, *(["--only", *steps] if steps else [])], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=1500)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert p.returncode == 0, (p.stdout[-3000:], {k: v["status"] for k, v in summary["steps"].items()})
    if steps:
        assert list(summary["steps"]) == list(steps)
    assert (tmp_path / "out" / "summary.md").read_text().startswith("# jaxvae device check:")
    if "env" in summary["steps"]:
        env_result = summary["steps"]["env"]["result"]
        assert env_result["backend"]["jax_backend"] == "cpu" and env_result["versions"]["jax"]
        assert not env_result["imports"]["failed"]
    return summary


def _result(summary, step):
    return summary["steps"][step]["result"]


# The default run's share, in two tests of under 30 s each: the first step and those device_steps.py adds (AIS,
# bf16, two-layer IWAE), at toy sizes; every step (train, eval, vectorized, conv too) runs behind -m slow.
def test_device_check_tiny_env_and_ais(tmp_path, run_env):
    summary = _device_check(tmp_path, run_env, "env", "ais")
    ais = _result(summary, "ais")["ais"]
    assert ais["num_steps"] == 10 and ais["examples"] == 4 and ais["seconds"] > 0
    assert "## AIS" in (tmp_path / "out" / "summary.md").read_text()


@pytest.mark.slow  # 21 s; the env + AIS steps above stay in the default run (the CI budget, tests/README.md)
def test_device_check_tiny_bf16_and_two_layers(tmp_path, run_env):
    summary = _device_check(tmp_path, run_env, "bf16", "hier")
    bf16 = _result(summary, "bf16")
    assert set(bf16["runs"]) == {"float32", "bfloat16"} and bf16["speedup_b100_k5"] > 0
    hier = _result(summary, "hier")
    assert hier["training"]["steps"] == 40 and hier["test"]["nll"] > 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## bf16 vs float32" in md and "## Two-layer IWAE" in md


@pytest.mark.slow
def test_device_check_tiny_every_step(tmp_path, run_env):
    """The whole check (every default step, in the documented order) at toy sizes: ~2 min on 2 cores."""
    summary = _device_check(tmp_path, run_env)
    import device_check

    assert list(summary["steps"]) == list(device_check.STEP_LIMITS)
    assert _result(summary, "train")["train"][0]["examples_per_s"] > 0
    rows = _result(summary, "vectorized")["rows"]
    assert [r["runs"] for r in rows] == [2] and rows[0]["vectorized_steps_per_s"] > 0
    assert _result(summary, "conv")["jaxvae_per_step"]["examples_per_s"] > 0
    assert "vectorized_8_speedup" not in summary["goals"]  # 2 seeds at toy sizes: no goal read off them
    ev = _result(summary, "eval")["eval"]
    assert ev["main"]["k"] == 50 and ev["main"]["examples"] == 20 and "device_memory" in ev
    md = (tmp_path / "out" / "summary.md").read_text()
    for section in ("## Training", "## K=50 log p(x)", "## Vectorized seeds", "## AIS", "## Conv VAE",
                    "## bf16 vs float32", "## Two-layer IWAE"):
        assert section in md, section


def test_step_limits_fit_the_budget():
    import device_check

    assert sum(limit for limit, _ in device_check.STEP_LIMITS.values()) <= device_check.DEFAULT_BUDGET_S
    assert list(device_check.STEP_LIMITS)[0] == "env"
    doc = device_check.__doc__
    for name, (limit, _) in device_check.STEP_LIMITS.items():  # the docstring's table is the real one
        assert re.search(rf"^  {name}\s+{limit:.0f}\s", doc, re.M), name
