"""benchmarks/device_check.sh in its tiny CPU mode: every step runs and writes its JSON (the figures mean
nothing on a toy run; this keeps the prepared accelerator check from rotting). The steps run as two tests of
two steps each, so that the two pytest workers share them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _device_check(tmp_path, run_env, *steps) -> dict:
    env = dict(run_env, PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.run([str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path / "out"), "--tiny",
                        "--only", *steps], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert p.returncode == 0, (p.stdout[-2000:], {k: v["status"] for k, v in summary["steps"].items()})
    assert set(summary["steps"]) == set(steps)
    assert summary["machine"]["backend"] == "cpu" and summary["machine"]["cpu_model"]
    return summary


# Every step but "tests" (pytest inside pytest: the device test subset is the suite's own files).
def test_device_check_tiny_train_and_eval_steps(tmp_path, run_env):
    _device_check(tmp_path, run_env, "train", "eval")
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert train["mode"] == "tiny" and train["train"][0]["examples_per_s"] > 0
    ev = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert ev["eval"]["main"]["k"] == 50 and ev["eval"]["main"]["examples"] == 20


def test_device_check_tiny_vectorized_and_run_steps(tmp_path, run_env):
    summary = _device_check(tmp_path, run_env, "vectorized", "iwae_mnist")
    rows = json.loads((tmp_path / "out" / "vectorized.json").read_text())["rows"]
    assert [r["runs"] for r in rows] == [1, 2] and all(r["vectorized_steps_per_s"] > 0 for r in rows)
    assert summary["run"]["test"]["num_examples"] == 50
