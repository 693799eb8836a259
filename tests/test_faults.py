"""Fault injection, the fast case (issue 13): a vectorized group killed or interrupted at random points
(benchmarks/faults.py, which runs the long campaign over solo runs, groups and the launcher), relaunched,
ends with the uninterrupted group's exact results, every checkpoint restorable and a truthful status.json."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from runhelpers import ROOT


def _campaign(run_env, tmp_path, faults: int, epochs: int) -> dict:
    """A vectorized group of ``epochs`` x 27 steps, ``faults`` random kills/interrupts in one trial, then a
    last launch."""
    p = subprocess.run([sys.executable, "benchmarks/faults.py", "--kinds", "group", "--faults", str(faults),
                        "--epochs", str(epochs),
                        "--per-trial", f"{faults},{faults}", "--max-trials", "1", "--seed", "3", "--no-warm",
                        "--max-delay", "6", "--work", str(tmp_path)], cwd=ROOT, env=run_env, capture_output=True,
                       text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(p.stdout.split("# summary ", 1)[1])
    assert 1 <= summary["faults"] <= faults and summary["trials_with_problems"] == 0, p.stdout[-3000:]
    return summary


def test_group_survives_a_random_fault_with_nothing_lost(run_env, tmp_path):
    _campaign(run_env, tmp_path, faults=1, epochs=2)


@pytest.mark.slow  # 30-40 s with two pytest workers; the shorter one-fault sibling above stays in the default run
def test_group_survives_random_faults_with_nothing_lost(run_env, tmp_path):
    _campaign(run_env, tmp_path, faults=2, epochs=3)


_LEADER_EXITS = """
import ctypes, fcntl, os, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
threading.Thread(target=lambda: time.sleep(float(sys.argv[2]))).start()
print("locked", flush=True)
ctypes.CDLL(None).pthread_exit(None)  # the leader thread ends; the other thread keeps the process alive
"""


def test_process_with_a_zombie_leader_still_counts_as_alive(tmp_path):
    """The harness's "lock still held after the process ended" (third campaign): a killed multithreaded run
    whose leader thread was already a zombie while another thread still held its files (and the lock)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import faults
    from jaxvae.experiment import locks

    p = subprocess.Popen([sys.executable, "-c", _LEADER_EXITS, str(tmp_path / ".lock"), "2"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        for _ in range(100):  # the leader's exit is asynchronous to our read
            stat = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if stat == "Z":
                break
            time.sleep(0.02)
        assert stat == "Z"  # what the old check looked at
        assert locks.is_held(tmp_path) is not None  # ... while the lock is held
        assert faults._is_alive(p.pid)  # the fixed check sees the live thread
    finally:
        p.wait(timeout=30)
    assert locks.is_held(tmp_path) is None
    assert not faults._is_alive(p.pid)


def test_kept_window_allows_a_preemption_checkpoint_and_catches_a_lost_one():
    """The harness's checkpoint check (a CI run failed on [2, 27, 54] vs [27, 54]: a SIGTERM at step 2 of
    a 2-epoch run left an extra, correct checkpoint while fewer than keep=3 regular ones existed)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.faults import kept_window_problem

    assert kept_window_problem([2, 27, 54], [27, 54], keep=3) is None  # the CI case: nothing lost
    assert kept_window_problem([37, 54, 81], [27, 54, 81], keep=3) is None  # the extra step pushed 27 out
    assert kept_window_problem([27, 54, 81], [27, 54, 81], keep=3) is None
    assert kept_window_problem([2, 54], [27, 54], keep=3) is not None  # 27 lost
    assert kept_window_problem([2, 27, 54], [27, 54], keep=2) is not None  # more than keep kept
    assert kept_window_problem([27, 37], [27, 54], keep=3) is not None  # the newest step missing
    assert kept_window_problem([], [27, 54], keep=3) is not None
    assert kept_window_problem([27, 54, 81], [54, 81], keep=2) is not None  # a pruned step came back
