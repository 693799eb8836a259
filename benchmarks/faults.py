"""Fault-injection campaign (issue 13): kill or interrupt runs at random points, relaunch, and check that
nothing was lost.

    python benchmarks/faults.py --faults 200 --seed 0 --out /tmp/faults.jsonl

Three kinds of process, on tiny configs (quickstart on the embedded digits, 81 steps with checkpoints at
27, 54, 81, validation at 54 and 81, a 100-example evaluation):

* ``solo``: ``python -m jaxvae.main``;
* ``group``: ``python -m jaxvae.experiment.vectorized``, two members (seeds 0 and 1);
* ``launcher``: ``./launch.sh experiments/quickstart.py`` (its two sweep points, then the report).

A trial starts the process, waits a random time drawn uniformly over the length of an uninterrupted
run (so faults land during start-up and data preparation, compilation, dispatches, checkpoint saves,
evaluation and report writing; in some trials the data load or every checkpoint commit is slowed by the
test hooks, which widens those windows without changing any number), sends SIGKILL (for the launcher: to
it and every process under it, as a lost machine; or only to the run under it), SIGTERM or SIGINT, and
repeats this ``--per-trial`` times (default 1-3) before a last uninterrupted launch. After each fault it checks that status.json
tells the truth (exit 3 -> "preempted", exit 0 -> "finished", never "failed") and that the workdir lock
was released; after the last launch, that the results equal an uninterrupted run's exactly, that the
same checkpoint steps exist as in the uninterrupted run and all restore, and that the last checkpoint is
bit-for-bit the uninterrupted one's. Prints one JSON line per trial and a summary.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SMALL = ["--config.train.steps_per_dispatch=2", "--config.eval.ks=(1,5,50)", "--config.eval.max_examples=100",
         "--config.eval.valid_k=5", "--config.eval.valid_examples=100", "--config.train.log_every_steps=2",
         "--config.train.checkpoint_every_epochs=1", "--config.train.num_epochs=3",
         "--config.train.eval_every_epochs=2", "--config.eval.images=False"]
QS = "experiments/quickstart.py"
SWEEP = ["k=1,name=elbo", "k=5,name=iwae"]


def argv_for(kind: str, where: Path) -> list[str]:
    py = sys.executable
    if kind == "solo":
        return [py, "-m", "jaxvae.main", f"--config={QS}", f"--workdir={where / 'run'}", *SMALL]
    if kind == "group":
        return [py, "-m", "jaxvae.experiment.vectorized", f"--config={QS}", f"--workdir={where / 'm0'}",
                f"--workdir={where / 'm1'}", '--overrides=[{"seed": 0}, {"seed": 1}]', *SMALL]
    # --parallel 2: both runs at once, each pinned to its share of the CPUs (the pinning program execs them)
    return [str(ROOT / "launch.sh"), QS, "--root", str(where / "root"), "--no-vectorize", "--parallel", "2",
            *SMALL]


def workdirs(kind: str, where: Path) -> list[Path]:
    if kind == "solo":
        return [where / "run"]
    if kind == "group":
        return [where / "m0", where / "m1"]
    return [where / "root" / "quickstart" / n for n in SWEEP]


def _children(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc)."""
    kids = collections.defaultdict(list)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids[ppid].append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every process under it, as one event: the process is stopped first (SIGSTOP), so
    it cannot start another one between the listing and the kill (a launcher's run started in that gap
    escaped the harness's wait, and the lock check after the fault then found the lock of a run still
    exiting). Returns the pids killed, to be waited for."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    killed = [pid]
    for _ in range(3):  # a child forked just before the stop: list again
        new = [c for c in _children(pid) if c not in killed]
        if not new and len(killed) > 1:
            break
        for c in new:
            try:
                os.kill(c, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        killed += new
    for p in killed:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def _status(wd: Path) -> dict:
    try:
        return json.loads((wd / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _phase(kind: str, where: Path) -> str:
    """What the process was doing when the fault landed (from its workdirs)."""
    wds = workdirs(kind, where)
    if any(list((wd / "checkpoints").glob("*/*.orbax-checkpoint-tmp-*")) for wd in wds if wd.is_dir()):
        return "checkpoint save"
    msgs = [_status(wd).get("message", "") for wd in wds]
    states = [_status(wd).get("status") for wd in wds]
    if all(s == "finished" for s in states):  # its work done: the launcher's report, a run's exit
        return "report writing" if kind == "launcher" else "exit after finishing"
    if any("evaluating" in m for m in msgs):
        return "evaluation"
    if any(m.startswith("epoch") for m in msgs):
        return "training dispatch"
    if any("loading data" in m for m in msgs):
        return "data preparation / compilation"
    return "start-up"


def launch(kind: str, where: Path, env: dict, log) -> subprocess.Popen:
    """Starts the process (no ``preexec_fn``: this process has imported JAX, whose threads make a plain
    ``fork`` unsafe and warned; without it ``subprocess`` uses vfork/posix_spawn). SIGINT is as from a
    terminal because ``main`` gives this process a SIGINT handler, which exec resets to the default (a
    background job would otherwise pass on its inherited SIG_IGN)."""
    return subprocess.Popen(argv_for(kind, where), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _load(wd: Path, step: int):
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    try:
        return ckptr.restore((wd / "checkpoints" / "latest" / str(step) / "default").absolute())
    finally:
        ckptr.close()


def _steps(wd: Path, which: str = "latest") -> list[int]:
    d = wd / "checkpoints" / which
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _equal_trees(a, b) -> bool:
    import jax
    import numpy as np

    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def kept_window_problem(got: list[int], want: list[int], keep: int) -> str | None:
    """Whether an interrupted run kept the right checkpoints (None: it did).

    A preemption adds a checkpoint at the step it stopped (e.g. 2 or 37), so the kept window of the last
    ``keep`` (train.keep_checkpoints) steps may hold it beside, or instead of, an older regular one. What must
    hold: the same newest step as the uninterrupted run (``want``), and ``got`` is exactly the newest ``keep``
    steps of everything either run kept, so no regular step of the window was lost. (Comparing the counts
    alone failed when fewer than ``keep`` regular steps were ever saved: [2, 27, 54] against [27, 54].)
    """
    if not got or not want or got[-1] != want[-1]:
        return f"newest step differs: latest steps {got} vs {want}"
    window = sorted(set(got) | set(want))[-keep:]
    if got != window:
        return f"latest steps {got} vs {want}: expected the newest {keep} of both, {window}"
    return None


def check_final(kind: str, where: Path, ref: Path) -> list[str]:
    """Problems of a finished trial against the uninterrupted reference (empty: all is well)."""
    problems = []
    for wd, rwd in zip(workdirs(kind, where), workdirs(kind, ref)):
        st = _status(wd)
        if st.get("status") != "finished":
            problems.append(f"{wd.name}: status {st}")
            continue
        a, b = (json.loads((d / "results.json").read_text()) for d in (wd, rwd))
        if a["test"] != b["test"] or a["valid"] != b["valid"] or a["train"]["steps"] != b["train"]["steps"]:
            problems.append(f"{wd.name}: results differ: {a['test']['iwae']} vs {b['test']['iwae']}")
        keep = json.loads((wd / "config.json").read_text())["train"]["keep_checkpoints"]
        problem = kept_window_problem(_steps(wd), _steps(rwd), keep)
        if problem:
            problems.append(f"{wd.name}: {problem}")
        if _steps(wd, "best") != _steps(rwd, "best"):
            problems.append(f"{wd.name}: best steps {_steps(wd, 'best')} vs {_steps(rwd, 'best')}")
        for s in _steps(wd):
            try:
                tree = _load(wd, s)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{wd.name}: step {s} does not restore ({type(e).__name__})")
                continue
            if s == _steps(rwd)[-1] and not _equal_trees(tree, _load(rwd, s)):
                problems.append(f"{wd.name}: last checkpoint differs from the uninterrupted run's")
        if (wd / "checkpoints" / "corrupt").exists():
            problems.append(f"{wd.name}: a checkpoint was quarantined as corrupt")
    if kind == "launcher" and not (where / "root" / "quickstart" / "report.md").exists():
        problems.append("no report.md")
    return problems


def check_after_fault(kind: str, where: Path, rc: int, sig: str, before: dict) -> list[str]:
    """``before``: each workdir's status.json before this launch (a launch stopped before it took the lock
    leaves it as it was, e.g. "running" after an earlier kill -9)."""
    from jaxvae.experiment import locks

    problems = []
    for wd in workdirs(kind, where):
        st = _status(wd).get("status")
        if _status(wd) == before.get(str(wd)):
            st = None if st in ("running", "preempted", "finished", None) else st
        if st == "failed":
            problems.append(f"{wd.name}: status failed after {sig} (rc {rc}): {_status(wd)}")
        if kind != "launcher" and rc == 3 and st not in ("preempted", "finished", None):
            problems.append(f"{wd.name}: exit 3 but status {st}")
        now = _status(wd).get("status")  # (not st: a relaunch of a finished run leaves it as it was)
        if kind != "launcher" and rc == 0 and now != "finished":
            problems.append(f"{wd.name}: exit 0 but status {now}")
        if wd.is_dir() and locks.is_held(wd):
            problems.append(f"{wd.name}: lock still held after the process ended")
    if rc not in (0, 3, -9, 137, -15, 143, -2, 130) and not (kind == "launcher" and rc == 1):
        problems.append(f"exit code {rc} after {sig}")
    return problems


def run_reference(kind: str, ref: Path, env: dict) -> float:
    """An uninterrupted run (reused when ``ref`` holds a finished one); its wall time."""
    done = ref / "seconds.txt"
    if done.exists() and all(_status(wd).get("status") == "finished" for wd in workdirs(kind, ref)):
        return float(done.read_text())
    ref.mkdir(parents=True, exist_ok=True)
    t = time.time()
    with open(ref / f"{kind}.log", "w") as log:
        rc = launch(kind, ref, env, log).wait()
    if rc != 0:
        sys.exit(f"reference {kind} run failed (exit {rc}); see {ref / f'{kind}.log'}")
    done.write_text(str(time.time() - t))
    return time.time() - t


def trial(kind: str, rng: random.Random, where: Path, ref: Path, base_env: dict, duration: float,
          a_min: int = 1, a_max: int = 3, max_delay: float = float("inf")) -> dict:
    env = dict(base_env)
    hooks = []
    if rng.random() < 0.3:
        env["JAXVAE_TEST_SLOW_SAVE_S"] = "0.5"
        hooks.append("slow save")
    if rng.random() < 0.2:
        env["JAXVAE_TEST_SLOW_LOAD_S"] = "1.0"
        hooks.append("slow load")
    faults, problems, notes = [], [], []
    log = open(where / "trial.log", "ab")  # noqa: SIM115
    for _ in range(rng.randint(a_min, a_max)):
        before = {str(wd): _status(wd) for wd in workdirs(kind, where)}
        proc = launch(kind, where, env, log)
        delay = rng.uniform(0.2, min(max_delay, duration * 1.05 + 2.0 * ("slow save" in hooks)))
        sig_name = rng.choice(["SIGKILL", "SIGKILL", "SIGTERM", "SIGTERM", "SIGINT"]
                              + (["SIGKILL-run"] if kind == "launcher" else []))
        try:
            proc.wait(timeout=delay)
            continue  # it finished before the fault: nothing injected
        except subprocess.TimeoutExpired:
            pass
        phase = _phase(kind, where)
        tree = [proc.pid, *_children(proc.pid)]  # waited for below (a killed launcher's runs are reparented)
        if sig_name == "SIGKILL-run" and len(tree) == 1:
            sig_name = "SIGKILL"  # no run under the launcher yet: the machine is lost instead
        if sig_name == "SIGKILL":  # the machine is lost: the process and everything under it
            tree = _kill_tree(proc.pid)
        elif sig_name == "SIGKILL-run":  # one run under the launcher dies
            try:
                os.kill(tree[1], signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            os.kill(proc.pid, getattr(signal, sig_name))
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            problems.append(f"did not stop within 300 s after {sig_name}")
        deadline = time.time() + 120  # a killed launcher's runs: wait until they are gone
        while time.time() < deadline and any(_is_alive(p) for p in tree[1:] + _children(proc.pid)):
            time.sleep(0.1)
        time.sleep(0.05)
        found = check_after_fault(kind, where, rc, sig_name, before)
        problems += found
        if sig_name in ("SIGTERM", "SIGINT") and rc not in (0, 3):  # allowed, but worth a look: kept
            notes.append(f"{sig_name} in {phase}: exit {rc}")
        faults.append({"signal": sig_name, "phase": phase, "after_s": round(delay, 2), "exit_code": rc})
    env.pop("JAXVAE_TEST_SLOW_SAVE_S", None)
    env.pop("JAXVAE_TEST_SLOW_LOAD_S", None)
    rc = launch(kind, where, env, log).wait()
    if rc != 0:
        # a launcher whose run was killed mid-flight records it failed: one more launch must finish it
        problems.append(f"final launch exit {rc}")
    log.close()
    problems += check_final(kind, where, ref)
    return {"kind": kind, "hooks": hooks, "faults": faults, "problems": problems, "notes": notes}


def _is_alive(pid: int) -> bool:
    """Whether any thread of ``pid`` is still running. Not the leader's state alone: when a multithreaded
    process (every JAX run) is killed, its leader thread can be a zombie ("Z" in /proc/<pid>/stat) while
    other threads are still exiting, and the files (the workdir lock with them) are closed only when the
    last thread ends. Judging by the leader alone, the harness checked the lock in that window and
    reported "lock still held after the process ended" (tests/test_faults.py reproduces the window)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for t in tasks:
        try:
            if Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faults", type=int, default=200, help="stop once this many faults were injected")
    p.add_argument("--kinds", default="solo,group,launcher")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="append one JSON line per trial here")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--max-minutes", type=float, default=1e9)
    p.add_argument("--per-trial", default="1,3", help="min,max faults injected before a trial's last launch")
    p.add_argument("--max-trials", type=int, default=10**9)
    p.add_argument("--max-delay", type=float, default=float("inf"), help="latest fault, seconds after a launch")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs of 27 steps of each run (default 3; the test suite's short case uses 2)")
    p.add_argument("--no-warm", action="store_true",
                   help="no warm-up run before the reference (keeps $JAX_COMPILATION_CACHE_DIR when set)")
    a = p.parse_args()
    SMALL[SMALL.index("--config.train.num_epochs=3")] = f"--config.train.num_epochs={a.epochs}"
    signal.signal(signal.SIGINT, signal.default_int_handler)  # children exec with SIGINT at its default
    work = Path(a.work or tempfile.mkdtemp(prefix="jaxvae_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PYTHON=sys.executable,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    if not (a.no_warm and env.get("JAX_COMPILATION_CACHE_DIR")):
        env["JAX_COMPILATION_CACHE_DIR"] = str(work / "jax_cache")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for k in ("JAXVAE_TEST_SLOW_SAVE_S", "JAXVAE_TEST_SLOW_LOAD_S", "JAXVAE_WORKDIR_LOCK_FDS", "JAXVAE_RUN_MODULE"):
        env.pop(k, None)
    kinds = a.kinds.split(",")
    durations = {}
    for kind in kinds:
        if not a.no_warm:
            run_reference(kind, work / "ref" / "warm" / kind, env)  # fills the compilation cache
        durations[kind] = run_reference(kind, work / "ref" / kind, env)
        print(f"# reference {kind}: {durations[kind]:.1f} s", flush=True)
    rng = random.Random(a.seed)
    total, trials, bad = 0, 0, 0
    by_phase, by_kind, by_signal = collections.Counter(), collections.Counter(), collections.Counter()
    t0 = time.time()
    out = open(a.out, "a") if a.out else None  # noqa: SIM115
    while total < a.faults and time.time() - t0 < 60 * a.max_minutes and trials < a.max_trials:
        kind = kinds[trials % len(kinds)]
        where = work / "trials" / f"{a.seed}-{trials:04d}"
        where.mkdir(parents=True)
        lo, hi = (int(x) for x in a.per_trial.split(","))
        r = trial(kind, rng, where, work / "ref" / kind, env, durations[kind], lo, hi, a.max_delay)
        r.update(trial=trials, seed=a.seed)
        trials += 1
        total += len(r["faults"])
        bad += bool(r["problems"])
        for f in r["faults"]:
            by_phase[f["phase"]] += 1
            by_kind[kind] += 1
            by_signal[f["signal"]] += 1
        line = json.dumps(r)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()
        if not r["problems"] and not r["notes"]:  # a trial with either keeps its folder and trial.log
            shutil.rmtree(where, ignore_errors=True)
    summary = {"faults": total, "trials": trials, "trials_with_problems": bad, "by_kind": by_kind,
               "by_phase": by_phase, "by_signal": by_signal, "minutes": round((time.time() - t0) / 60, 1)}
    print("# summary " + json.dumps(summary), flush=True)
    if out:
        out.write(json.dumps({"summary": summary}) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
