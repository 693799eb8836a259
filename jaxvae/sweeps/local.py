"""Running a sweep's jobs on this machine: ``--parallel N`` processes, one GPU (or CPU slot) each, logs
and ``launch.json`` per run, a summary of failures.

Several launchers may work on one root at once (two terminals, several Slurm jobs): before a job starts,
the launcher takes its runs' workdir locks (``jaxvae.experiment.locks``) and hands them to the run's
process; a job whose lock another process holds is skipped ("held by another launcher") and the next free
one taken, so every run is trained once and N launchers share the work.
"""


from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from jaxvae.experiment.protocol import EXIT_PREEMPTED
from jaxvae.sweeps.plan import (is_url, Job, read_json, is_finished, run_state)

# ----------------------------------------------------------------------------------------------------
# Devices
# ----------------------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """GPU ids to hand out: from CUDA_VISIBLE_DEVICES when set, else ``nvidia-smi -L``; [] on CPU."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return [d.strip() for d in cvd.split(",") if d.strip() and d.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, _ in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


# ----------------------------------------------------------------------------------------------------
# Local execution
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    job: Job
    state: str  # finished | skipped | failed | preempted | not started | held (by another launcher)
    exit_code: int | None = None
    seconds: float = 0.0
    device: str | None = None
    note: str = ""  # held: who holds it


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


class Launcher:
    def __init__(self, jobs: list[Job], parallel: int, gpus: list[str], skip_finished: bool = True,
                 pin_cpus: bool = True):
        self.jobs = jobs
        self.parallel = max(1, parallel)
        self.gpus = gpus if self.parallel > 1 else []
        self.skip_finished = skip_finished
        self.running: dict[int, tuple[subprocess.Popen, Job, float, str | None, Any]] = {}
        self.outcomes: dict[int, Outcome] = {}
        self.stop = 0  # signals received
        self.cpu_slots = cpu_slots(self.parallel) if not self.gpus and pin_cpus else []
        self.slot_of: dict[int, int] = {}  # running job -> its cpu slot

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self.stop += 1
        name = signal.Signals(signum).name
        if self.stop == 1:
            print(f"\n{name}: no new runs; asking {len(self.running)} running run(s) to checkpoint and "
                  f"stop (SIGTERM). Send it again to kill them.", file=sys.stderr, flush=True)
            sig = signal.SIGTERM
        else:
            print(f"\n{name} again: killing running runs.", file=sys.stderr, flush=True)
            sig = signal.SIGKILL
        for proc, *_ in self.running.values():
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _pick_device(self) -> str | None:
        if not self.gpus:
            return None
        load = {g: 0 for g in self.gpus}
        for _, _, _, dev, _ in self.running.values():
            if dev in load:
                load[dev] += 1
        return min(self.gpus, key=lambda g: (load[g], self.gpus.index(g)))

    def _lock(self, i: int, job: Job) -> list | None:
        """The job's workdir locks, taken before anything is written there; None (outcome recorded) when
        another process holds one, or when the job turns out finished (by another launcher) once locked."""
        from jaxvae.experiment import locks  # noqa: PLC0415 - keep this module import-light

        taken = []
        try:
            for r in job.runs:
                if not is_url(r.workdir):
                    taken.append(locks.acquire(r.workdir, wait_s=0))
        except locks.WorkdirBusy:
            for lock in taken:
                lock.release()
            owner = locks.owner_of(job.runs[len(taken)].workdir)
            self.outcomes[i] = Outcome(job, "held", note=owner)
            print(f"[{i + 1}/{len(self.jobs)}] held   {job.name} (by {owner})", flush=True)
            return None
        except OSError:  # the workdir cannot be created: the run itself reports it
            for lock in taken:
                lock.release()
            return []
        if self.skip_finished and all(is_finished(r.workdir) for r in job.runs):
            for lock in taken:
                lock.release()
            self.outcomes[i] = Outcome(job, "skipped")
            print(f"[{i + 1}/{len(self.jobs)}] skip   {job.name} (finished by another launcher)", flush=True)
            return None
        return taken

    def _start(self, i: int, job: Job, held: list | None = None) -> None:
        from jaxvae.experiment import locks  # noqa: PLC0415

        for lock in [lock for lock in held or [] if lock.fallback]:  # a lock file names its process: the
            lock.release()  # run takes it itself (a short window in which another launcher could)
        held = [lock for lock in held or [] if not lock.fallback]
        for r in job.runs:
            if not is_url(r.workdir):
                os.makedirs(r.workdir, exist_ok=True)
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
        env = dict(os.environ)
        env[locks.FDS_ENV] = json.dumps({str(lock.workdir.resolve()): lock.fd for lock in held})
        dev = self._pick_device()
        if dev is not None:
            env["CUDA_VISIBLE_DEVICES"] = dev
            if self.parallel > len(self.gpus):  # several runs share a GPU: don't grab 75% each
                env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        cores = None
        if self.cpu_slots:  # CPU-only parallel runs: each on its own cores (see cpu_slots)
            used = [self.slot_of[j] for j in self.running if j in self.slot_of]
            slot = min(range(len(self.cpu_slots)), key=lambda k: (used.count(k), k))
            self.slot_of[i] = slot
            cores = self.cpu_slots[slot]
        cmd = shlex.join(job.argv)
        log = open(job.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        log.write(f"\n=== {now_iso()} launch on {socket.gethostname()}"
                  f"{'' if dev is None else ' CUDA_VISIBLE_DEVICES=' + dev}"
                  f"{'' if cores is None else ' cpus=' + ','.join(map(str, cores))}: {cmd}\n".encode())
        log.flush()
        argv = job.argv if cores is None else pinned_argv(job.argv, cores)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, pass_fds=[lock.fd for lock in held])
        for lock in held:  # the child holds them now (the same open file descriptions)
            lock.release()
        start = time.time()
        write_json(job.launch_path,
                    {"command": cmd, "argv": job.argv, "start": now_iso(), "end": None, "exit_code": None,
                     "host": socket.gethostname(), "pid": proc.pid, "device": dev})
        self.running[i] = (proc, job, start, dev, log)
        where = "" if dev is None else f" [GPU {dev}]"
        print(f"[{i + 1}/{len(self.jobs)}] start  {job.name}{where}  (log: {job.log_path})", flush=True)

    def _finish(self, i: int, rc: int) -> None:
        proc, job, start, dev, log = self.running.pop(i)
        self.slot_of.pop(i, None)
        log.close()
        secs = time.time() - start
        info = read_json(job.launch_path) or {}
        info.update(end=now_iso(), exit_code=rc, seconds=round(secs, 1))
        write_json(job.launch_path, info)
        if rc is not None and rc < 0:
            _mark_killed(job, -rc)
        if rc == 0 or (rc is not None and rc < 0 and all(is_finished(r.workdir) for r in job.runs)):
            state = "finished"  # (a signal during its exit, after it had finished, is not a failure)
        elif rc == 1 and _refused_as_busy(job.log_path):
            state = "held"
        elif rc == EXIT_PREEMPTED or (self.stop and rc in (-signal.SIGTERM, 128 + signal.SIGTERM)):
            state = "preempted"
        else:
            state = "failed"
        self.outcomes[i] = Outcome(job, state, rc, secs, dev)
        msg = {"finished": "done  ", "preempted": "PREEMPTED", "failed": "FAILED", "held": "held  "}[state]
        tail = {"finished": "", "held": " (held by another launcher)"}.get(state, f" (exit {rc}; log: {job.log_path})")
        print(f"[{i + 1}/{len(self.jobs)}] {msg} {job.name} in {secs:.1f}s{tail}", flush=True)

    def run(self) -> list[Outcome]:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            pending = []
            for i, job in enumerate(self.jobs):
                if self.skip_finished and all(is_finished(r.workdir) for r in job.runs):
                    self.outcomes[i] = Outcome(job, "skipped")
                    print(f"[{i + 1}/{len(self.jobs)}] skip   {job.name} (finished)", flush=True)
                else:
                    pending.append(i)
            pending.reverse()
            while pending or self.running:
                while pending and not self.stop and len(self.running) < self.parallel:
                    i = pending.pop()
                    held = self._lock(i, self.jobs[i])
                    if held is not None:
                        self._start(i, self.jobs[i], held)
                for i in list(self.running):
                    rc = self.running[i][0].poll()
                    if rc is not None:
                        self._finish(i, rc)
                if self.stop and pending:
                    for i in pending:
                        self.outcomes[i] = Outcome(self.jobs[i], "not started")
                    pending = []
                if self.running:
                    time.sleep(0.05)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return [self.outcomes[i] for i in range(len(self.jobs))]


def _mark_killed(job: Job, signum: int) -> None:
    """A run killed by a signal (kill -9, out of memory) could not say so: its status.json still reads
    "running". The launcher corrects it to "preempted" (it resumes from its last checkpoint), under the
    workdir's lock so that it never touches a workdir another process has taken since."""
    from jaxvae.experiment import locks  # noqa: PLC0415

    for r in job.runs:
        path = os.path.join(r.workdir, "status.json")
        if is_url(r.workdir) or (read_json(path) or {}).get("status") != "running":
            continue
        try:
            lock = locks.acquire(r.workdir, wait_s=0)
        except (locks.WorkdirBusy, OSError):
            continue
        try:
            st = read_json(path) or {}
            if st.get("status") == "running":
                write_json(path, {"status": "preempted", "step": st.get("step", 0),
                                   "message": f"killed by signal {signum} (the run could not save); run again "
                                              "to resume from its last checkpoint"})
        finally:
            lock.release()


def _refused_as_busy(log_path: str) -> bool:
    """Whether the run's last launch ended refused by a workdir lock (runner: "is in use by")."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        return False
    last = tail.rsplit("\n=== ", 1)[-1]
    return "error: workdir" in last and " is in use by " in last


# Sets the CPU affinity, then becomes the command (exec: same pid, same open descriptors, locks included).
_PIN = ("import os, sys\n"
        "os.sched_setaffinity(0, [int(c) for c in sys.argv[1].split(',')])\n"
        "try:\n"
        "    os.execvp(sys.argv[2], sys.argv[2:])\n"
        "except OSError as e:\n"
        "    sys.exit(f'error: cannot start {sys.argv[2]!r}: {e}')\n")


def pinned_argv(argv: Sequence[str], cores: Sequence[int]) -> list[str]:
    """``argv`` run on ``cores`` only, through a small Python program that sets the affinity and execs it.
    Not a ``preexec_fn``: that makes ``subprocess`` fork this process running Python's at-fork hooks, which
    is unsafe (and warned about by JAX) once a config of the sweep (e.g. experiments/custom_parts.py) has
    started JAX's threads here; without one, ``subprocess`` uses vfork/posix_spawn."""
    return [sys.executable, "-c", _PIN, ",".join(map(str, cores)), *argv]


def cpu_slots(parallel: int) -> list[list[int]]:
    """The CPUs this process may use, split into ``parallel`` contiguous slots ([] when there is nothing to
    split: one slot, fewer than 2 CPUs, or no ``sched_setaffinity``). Runs launched side by side on a
    CPU-only host each get their own slot: XLA sizes its thread pools from the affinity mask, so two runs no
    longer fight over every core (measured: docs/sweeps.md)."""
    if parallel <= 1 or not hasattr(os, "sched_getaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0))
    n = min(parallel, len(cpus))
    if n <= 1:
        return []
    bounds = [len(cpus) * k // n for k in range(n + 1)]
    return [cpus[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def per_run_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """A vectorized job's outcome split into one per run, each with the run's own state (status.json):
    a member that hit a NaN failed while the others finished, whatever the process's exit code."""
    out = []
    for o in outcomes:
        if len(o.job.runs) == 1 or o.state in ("skipped", "not started", "held"):
            out.append(o)
            continue
        log_dir = o.job.log_dir or o.job.runs[0].workdir
        for r in o.job.runs:
            state = run_state(r.workdir)
            if state not in ("finished", "failed", "preempted"):
                state = o.state
            out.append(Outcome(Job([r], o.job.argv, log_dir), state, o.exit_code, o.seconds, o.device))
    return out


def print_summary(outcomes: Sequence[Outcome], file=None) -> None:
    file = file if file is not None else sys.stdout  # looked up per call (pytest's capsys replaces it)
    by_state: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_state.setdefault(o.state, []).append(o)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by_state.items())
    print(f"\nSweep summary: {len(outcomes)} runs: {counts}", file=file)
    for state in ("finished", "skipped", "held", "preempted", "not started", "failed"):
        items = by_state.get(state, [])
        if not items:
            continue
        print(f"  {'held by another launcher' if state == 'held' else state}:", file=file)
        for o in items:
            extra = ""
            if state in ("failed", "preempted"):
                extra = f"  exit code {o.exit_code}, log: {o.job.log_path}"
            elif state == "finished":
                extra = f"  ({o.seconds:.1f}s)"
            elif state == "held" and o.note:
                extra = f"  ({o.note})"
            for r in o.job.runs:
                print(f"    {r.workdir}{extra}", file=file)
    file.flush()


