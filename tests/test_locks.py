"""One writer per workdir (issue 13): the workdir lock, the refusal of a second process, and concurrent
launchers on one root sharing the work (each run launched exactly once)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runhelpers import ROOT, SMALL, cmd
from test_sweep import LAUNCH, _write_experiment
from test_sweep import env as env  # noqa: F401 - the fake-runner launcher fixture

from jaxvae.experiment import locks

HOLDER = """
import sys, time
from jaxvae.experiment import locks
locks.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def _holder(workdir: Path, env=None) -> subprocess.Popen:
    """Another process holding the workdir's lock (until killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env=env or {**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "held"
    return p


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_lock_refuses_a_second_process_and_kill_9_leaves_no_stale_lock(tmp_path):
    wd = tmp_path / "run"
    holder = _holder(wd)
    try:
        owner = locks.is_held(wd)
        assert owner == f"host {socket.gethostname()}, pid {holder.pid} since " + owner.split(" since ")[1]
        with pytest.raises(locks.WorkdirBusy, match=f"in use by host .*pid {holder.pid} since"):
            locks.acquire(wd, wait_s=0.1)
        assert not locks.holds(wd)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert locks.is_held(wd) is None  # released by the OS: no stale lock after kill -9
    with locks.holding([wd]):
        assert locks.holds(wd)
        with locks.holding([wd]):  # re-entrant within a process
            assert locks.holds(wd)
        assert locks.holds(wd)
        assert json.loads((wd / ".lock").read_text())["pid"] == os.getpid()
    assert not locks.holds(wd) and locks.is_held(wd) is None


def test_lock_fallback_without_flock_takes_over_only_a_provably_dead_owner(tmp_path, monkeypatch):
    """On a filesystem without flock, a lock file with host, pid and heartbeat: refused while the owner's
    pid lives (or another host's heartbeat is fresh), taken over once it is gone."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    wd = tmp_path / "run"
    wd.mkdir()
    owner_file = wd / ".lock.owner"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner_file.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "since": "then",
                                          "heartbeat": time.time() - 3600}))
        with pytest.raises(locks.WorkdirBusy, match=f"pid {sleeper.pid} since then"):
            locks.acquire(wd)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = locks.acquire(wd)  # same host, pid gone: taken over
    assert lock.fallback and json.loads(owner_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not owner_file.exists()
    owner_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then", "heartbeat": time.time()}))
    with pytest.raises(locks.WorkdirBusy, match="host elsewhere"):
        locks.acquire(wd)
    owner_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "then",
                                      "heartbeat": time.time() - locks.STALE_S - 1}))
    locks.acquire(wd).release()


@pytest.mark.parametrize("vectorized", [False, True])
def test_second_process_on_a_locked_workdir_is_refused_without_touching_files(run_env, tmp_path, vectorized):
    """A run (or a vectorized group with one busy member) whose workdir another process holds exits 1 with
    one line naming the owner, and leaves every file as it was (config.json, status.json, ...)."""
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "config.json").write_text('{"seed": 123}')  # another run's: a changed config must not matter
    (wd / "status.json").write_text('{"status": "running", "step": 7, "message": "the other one"}')
    holder = _holder(wd, env={**run_env, "PYTHONPATH": str(ROOT)})
    before = _snapshot(wd)
    try:
        if vectorized:
            argv = [sys.executable, "-m", "jaxvae.experiment.vectorized", "--config=experiments/quickstart.py",
                    f"--workdir={tmp_path / 'free'}", f"--workdir={wd}", *SMALL]
        else:
            argv = cmd(wd, *SMALL)
        p = subprocess.run(argv, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: workdir {wd} is in use by host ")
    assert f"pid {holder.pid} since " in lines[0] and "--workdir" in lines[0]
    assert _snapshot(wd) == before
    if vectorized:  # all or nothing: the free member was not started either
        assert not (tmp_path / "free" / "config.json").exists()


def _log_launches(wd: Path) -> int:
    return (wd / "log.txt").read_text().count("\n=== ")


def test_two_launchers_on_one_root_train_each_run_exactly_once(tmp_path, env):  # noqa: F811
    """Two ./launch.sh of one experiment and root, started 0.3 s apart: each run is launched once (one
    launch in its log.txt, one start of the runner), the work is shared, and each summary names the runs the
    other launcher held."""
    exp = _write_experiment(tmp_path, ks=(1, 5, 50))  # 6 runs
    env = dict(env, FAKE_SLEEP="1.0")
    argv = [str(LAUNCH), exp, "--no-report", "--no-vectorize"]
    a = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    b = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (out_a, err_a), (out_b, err_b) = a.communicate(timeout=120), b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, out_a + err_a + out_b + err_b
    runs = sorted((tmp_path / "runs" / "tiny").glob("k=*"))
    assert len(runs) == 6
    for wd in runs:
        assert _log_launches(wd) == 1, (wd / "log.txt").read_text()
        assert len((wd / "launches.txt").read_text().splitlines()) == 1
        assert json.loads((wd / "results.json").read_text())["status"] == "finished"
    done = [int((re.search(r"Sweep summary: 6 runs: .*?(\d+) finished", o) or [0, 0])[1]) for o in (out_a, out_b)]
    assert sum(done) == 6 and min(done) >= 1, (out_a, out_b)  # shared: both trained some
    for out in (out_a, out_b):
        assert "held by another launcher:" in out or "skipped" in out
    assert "held by another launcher:" in out_a + out_b and "pid " in out_a + out_b
