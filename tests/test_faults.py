"""Fault injection, the fast case (issue 13): a vectorized group killed or interrupted at random points
(benchmarks/faults.py, which runs the long campaign over solo runs, groups and the launcher), relaunched,
ends with the uninterrupted group's exact results, every checkpoint restorable and a truthful status.json."""

from __future__ import annotations

import json
import subprocess
import sys

from runhelpers import ROOT


def test_group_survives_random_faults_with_nothing_lost(run_env, tmp_path):
    p = subprocess.run([sys.executable, "benchmarks/faults.py", "--kinds", "group", "--faults", "2",
                        "--per-trial", "2,2", "--max-trials", "2", "--seed", "3", "--no-warm", "--max-delay", "6",
                        "--work", str(tmp_path)], cwd=ROOT, env=run_env, capture_output=True, text=True,
                       timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(p.stdout.split("# summary ", 1)[1])
    assert summary["faults"] >= 1 and summary["trials_with_problems"] == 0, p.stdout[-3000:]
