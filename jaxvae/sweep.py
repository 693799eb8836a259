"""Sweeps: declare them in experiment files, list them, run them locally, on Slurm or on a TPU VM.

Declaring (in ``experiments/<name>.py``)::

    from jaxvae.sweep import chain, product, zipped

    def get_sweep():
        # 2 objectives (paired with their K) x 3 seeds = 6 runs
        return product(zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]}),
                       {"seed": [0, 1, 2]})

A sweep is a list of points; a point is a dict of config overrides keyed by dotted config paths. A file
without ``get_sweep`` is a one-point sweep named ``default``.

Running (the same as ``./launch.sh``)::

    python -m jaxvae.sweep experiments/X.py --list            # runs, workdirs, overrides, state
    python -m jaxvae.sweep experiments/X.py --dry-run         # the commands
    python -m jaxvae.sweep experiments/X.py --parallel 4      # run them (skips finished runs)
    python -m jaxvae.sweep experiments/X.py --slurm --gpus-per-task=1 --time=4:00:00
    python -m jaxvae.sweep experiments/X.py --config.train.num_epochs=1   # applies to every run

Each point becomes one run ``python -m jaxvae.main --config=experiments/X.py --workdir=runs/X/<name>
--config.<path>=<value> ...`` whose stdout/stderr go to ``<workdir>/log.txt``. The launcher also writes
``<workdir>/launch.json`` (command, start/end time, exit code) and ``runs/X/sweep.json`` (the planned
runs, so the report can list runs that never started).

This module imports only the standard library (experiment files import it); ``jaxvae.report`` is imported
lazily after a sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Point = dict[str, Any]
Sweep = list[Point]

DEFAULT_RUNNER = "jaxvae.main"
RUNNER_ENV = "JAXVAE_RUN_MODULE"  # overrides the runner module (tests use a fake runner)
VECTORIZED_RUNNER = "jaxvae.vectorized"  # trains a group of runs in one process (vmapped over runs)
VECTORIZED_RUNNER_ENV = "JAXVAE_VECTORIZED_RUN_MODULE"  # overrides it (tests)
DEFAULT_VECTORIZE = 16  # the default cap on runs per vectorized process

# Vectorized sweeps: runs whose configs differ ONLY in these fields are trained together by one process
# (jaxvae.vectorized: parameters/optimizer states/keys stacked, one vmapped train step). Every other field
# (objective.name/k, model sizes, flow length, batch size, dataset, schedule, epochs, ...) changes array
# shapes or the program, and runs that differ in it go to separate processes.
VECTORIZED_TRACED_FIELDS = ("train.learning_rate", "objective.beta", "objective.kl_warmup_steps")  # traced
VECTORIZED_HOST_FIELDS = (  # only used on the host or for per-member setup (init, data order, keys)
    "seed", "name", "train.log_every_steps", "train.keep_checkpoints")
VECTORIZED_HOST_PREFIXES = ("eval.",)  # evaluation is sequential per member, with its own config
VECTORIZED_FIELDS = VECTORIZED_TRACED_FIELDS + VECTORIZED_HOST_FIELDS + tuple(p + "*" for p in VECTORIZED_HOST_PREFIXES)


def is_vectorizable_field(key: str) -> bool:
    """May runs that differ in config field ``key`` (dotted path) be trained in one vectorized process?"""
    return key in VECTORIZED_TRACED_FIELDS or key in VECTORIZED_HOST_FIELDS or key.startswith(
        VECTORIZED_HOST_PREFIXES)
EXIT_PREEMPTED = 3  # the runner's exit code after SIGTERM + checkpoint (relaunching resumes)
MAX_NAME_LEN = 120

# ----------------------------------------------------------------------------------------------------
# Declaring sweeps
# ----------------------------------------------------------------------------------------------------


def _axis_values(key: str, values: Any) -> list:
    """An axis is a list/tuple/range of values; a bare scalar is a one-value axis (a constant)."""
    if isinstance(values, (list, tuple, range)):
        values = list(values)
        if not values:
            raise ValueError(f"sweep axis {key!r} has no values")
        return values
    return [values]


def _dotted(key: str) -> str:
    """Keyword-argument axes spell dots as double underscores: ``objective__k`` -> ``objective.k``."""
    return key.replace("__", ".")


def _factor(arg: Any, combine) -> Sweep:
    """A dict of axes -> its points (via ``combine``); a list of points -> itself (validated)."""
    if isinstance(arg, Mapping):
        return combine(arg)
    if isinstance(arg, (list, tuple)):
        points = []
        for p in arg:
            if not isinstance(p, Mapping):
                raise TypeError(f"a sweep is a list of dicts; got an element {p!r}")
            points.append(dict(p))
        return points
    raise TypeError(f"expected a dict of axes or a list of points, got {type(arg).__name__}")


def _merge(points: Iterable[Mapping[str, Any]]) -> Point:
    merged: Point = {}
    for p in points:
        for k, v in p.items():
            if k in merged:
                raise ValueError(f"sweep key {k!r} is set by two factors of a product/zipped")
            merged[k] = v
    return merged


def _product_of_axes(axes: Mapping[str, Any]) -> Sweep:
    keys = list(axes)
    values = [_axis_values(k, axes[k]) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def _zip_of_axes(axes: Mapping[str, Any]) -> Sweep:
    keys = list(axes)
    values = [_axis_values(k, axes[k]) for k in keys]
    lengths = {k: len(v) for k, v in zip(keys, values) if len(v) > 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"zipped axes must have the same length, got {lengths}")
    n = max((len(v) for v in values), default=1)
    values = [v * n if len(v) == 1 else v for v in values]  # constants broadcast
    return [dict(zip(keys, combo)) for combo in zip(*values)]


def product(*factors: Mapping[str, Any] | Sequence[Mapping[str, Any]], **axes: Any) -> Sweep:
    """Cartesian product. Each positional factor is a dict of axes (``{"objective.k": [1, 5, 50]}``)
    or a sweep (list of points, e.g. from ``zipped``); keyword axes spell dots as ``__``.

    The first axis varies slowest: ``product({"k": [1, 5]}, {"seed": [0, 1]})`` ->
    ``k=1,seed=0; k=1,seed=1; k=5,seed=0; k=5,seed=1``.
    """
    sweeps = [_factor(f, _product_of_axes) for f in factors]
    if axes:
        sweeps.append(_product_of_axes({_dotted(k): v for k, v in axes.items()}))
    if not sweeps:
        return [{}]
    return [_merge(combo) for combo in itertools.product(*sweeps)]


def zipped(*factors: Mapping[str, Any] | Sequence[Mapping[str, Any]], **axes: Any) -> Sweep:
    """Element-wise pairing of axes of equal length (one-value axes broadcast):
    ``zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]})`` -> 2 points.
    Positional sweeps (lists of points) are zipped point by point with the rest.
    """
    sweeps = [_factor(f, _zip_of_axes) for f in factors]
    if axes:
        sweeps.append(_zip_of_axes({_dotted(k): v for k, v in axes.items()}))
    if not sweeps:
        return [{}]
    lengths = {len(s) for s in sweeps if len(s) > 1}
    if len(lengths) > 1:
        raise ValueError(f"zipped sweeps must have the same length, got {sorted(len(s) for s in sweeps)}")
    n = max(len(s) for s in sweeps)
    sweeps = [s * n if len(s) == 1 else s for s in sweeps]
    return [_merge(combo) for combo in zip(*sweeps)]


def chain(*sweeps: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Sweep:
    """Concatenation: the points of ``a`` then those of ``b`` ... (a dict of axes counts as its product)."""
    out: Sweep = []
    for s in sweeps:
        out.extend(_factor(s, _product_of_axes))
    return out


def normalize_sweep(sweep: Any) -> Sweep:
    """What ``get_sweep()`` may return -> a list of points with tuple (not list) values."""
    if sweep is None:
        return [{}]
    points = _factor(sweep, _product_of_axes)
    out = []
    for p in points:
        q = {}
        for k, v in p.items():
            if not isinstance(k, str) or not k or not all(part.isidentifier() for part in k.split(".")):
                raise ValueError(f"sweep key {k!r} is not a dotted config path")
            q[k] = tuple(v) if isinstance(v, list) else v
        out.append(q)
    return out or [{}]


# ----------------------------------------------------------------------------------------------------
# Names, values and commands
# ----------------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]+")


def sanitize(text: str) -> str:
    """Characters outside ``[A-Za-z0-9._+-]`` -> ``_`` (paths, Slurm patterns and shells stay happy)."""
    text = _UNSAFE.sub("_", text)
    return text if text not in ("", ".", "..") else "_" + text


def _value_label(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "-".join(_value_label(x) for x in v) if v else "empty"
    if isinstance(v, str):
        return sanitize(v) if v else "empty"
    return sanitize(repr(v) if isinstance(v, float) else str(v))


def flag_value(v: Any) -> str:
    """A Python value as ml_collections ``config_flags`` parses it on the command line."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        items = [repr(x) if isinstance(x, str) else flag_value(x) for x in v]
        return "(" + ",".join(items) + ("," if len(items) == 1 else "") + ")"
    return str(v)


def key_labels(keys: Iterable[str]) -> dict[str, str]:
    """Last path component of each key; the full dotted path where two keys share a last component."""
    keys = list(dict.fromkeys(keys))
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: sanitize(short[k] if counts[short[k]] == 1 else k) for k in keys}


def run_names(points: Sequence[Point]) -> list[str]:
    """Readable, unique, path-safe names: ``k=50,seed=1`` (keys sorted by label); ``default`` for {}."""
    labels = key_labels(k for p in points for k in p)
    names = []
    for p in points:
        parts = sorted(f"{labels[k]}={_value_label(v)}" for k, v in p.items())
        name = ",".join(parts) or "default"
        if len(name) > MAX_NAME_LEN:
            digest = hashlib.sha1(name.encode()).hexdigest()[:8]
            name = name[: MAX_NAME_LEN - 9] + "-" + digest
        names.append(name)
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        n = seen.get(name, 0) + 1
        seen[name] = n
        candidate = name if n == 1 else f"{name}_{n}"
        while candidate in seen and n > 1:  # "x_2" declared explicitly elsewhere: keep counting
            n += 1
            candidate = f"{name}_{n}"
        if n > 1:
            seen[candidate] = 1
            print(f"warning: sweep points {name!r} collide; naming the duplicate {candidate!r}",
                  file=sys.stderr)
        unique.append(candidate)
    return unique


@dataclasses.dataclass
class Run:
    index: int
    name: str
    workdir: str
    overrides: Point

    def override_args(self) -> list[str]:
        return [f"--config.{k}={flag_value(v)}" for k, v in self.overrides.items()]


@dataclasses.dataclass
class Job:
    """One process to launch (locally, as one Slurm array task, or on every host of a TPU VM): one run
    (``jaxvae.main``) or a vectorized group of runs trained by one ``jaxvae.vectorized`` process, see
    ``plan_jobs``."""

    runs: list[Run]
    argv: list[str]
    log_dir: str | None = None  # where log.txt and launch.json go; default: the first run's workdir

    @property
    def name(self) -> str:
        return "+".join(r.name for r in self.runs)

    @property
    def label(self) -> str:
        """A short, path-safe name: the run's name, or the first member's plus the group size."""
        return self.runs[0].name if len(self.runs) == 1 else f"{self.runs[0].name}+{len(self.runs) - 1}_more"

    @property
    def log_path(self) -> str:
        return os.path.join(self.log_dir or self.runs[0].workdir, "log.txt")

    @property
    def launch_path(self) -> str:
        return os.path.join(self.log_dir or self.runs[0].workdir, "launch.json")


def _effective(run: Run, defaults: Mapping[str, Any] | None, key: str) -> Any:
    """A run's value of ``key``: its override, else the experiment's config value (when known)."""
    if key in run.overrides:
        v = run.overrides[key]
        return tuple(v) if isinstance(v, list) else v
    if defaults is not None and key in defaults:
        return defaults[key]
    return _MISSING


_MISSING = object()


def group_key(run: Run, defaults: Mapping[str, Any] | None, keys: Iterable[str]) -> tuple:
    """The values of the non-vectorizable swept fields: runs with equal keys can share a process."""
    out = []
    for k in sorted(keys):
        if is_vectorizable_field(k):
            continue
        v = _effective(run, defaults, k)
        out.append((k, repr(v) if v is not _MISSING else f"<unset:{k}>"))
    return tuple(out)


def group_runs(runs: Sequence[Run], vectorize: int | None, defaults: Mapping[str, Any] | None = None
               ) -> list[list[Run]]:
    """Runs -> groups (in order of first appearance) whose configs differ only in vectorizable fields
    (``VECTORIZED_FIELDS``), each of at most ``vectorize`` runs; ``vectorize`` None/0/1: one run each.

    A field that only some runs override is compared with the experiment's config value (``defaults``,
    dotted path -> value) when given, else treated as different.
    """
    if not vectorize or vectorize <= 1:
        return [[r] for r in runs]
    keys = {k for r in runs for k in r.overrides}
    by_key: dict[tuple, list[Run]] = {}
    for r in runs:
        by_key.setdefault(group_key(r, defaults, keys), []).append(r)
    groups = []
    for members in by_key.values():
        for i in range(0, len(members), vectorize):
            groups.append(members[i:i + vectorize])
    groups.sort(key=lambda g: g[0].index)
    return groups


def vectorized_argv(python: str, module: str, experiment: str, runs: Sequence[Run], passthrough) -> list[str]:
    """The command that trains ``runs`` in one process (``python -m jaxvae.vectorized``)."""
    overrides = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.overrides.items()} for r in runs]
    return [python, "-m", module, f"--config={experiment}", *[f"--workdir={r.workdir}" for r in runs],
            f"--overrides={json.dumps(overrides, separators=(',', ':'))}", *passthrough]


def plan_jobs(runs: Sequence[Run], base_argv, vectorize: int | None = None, group_argv=None,
              defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Group runs into processes: with ``vectorize`` > 1 (the cap on the group size) and ``group_argv``
    (runs -> command), runs whose configs differ only in vectorizable fields share one process
    (``group_runs``); a group of one is launched as a plain run (``base_argv``)."""
    if group_argv is None:
        vectorize = None
    jobs = []
    for g in group_runs(runs, vectorize, defaults):
        jobs.append(Job(g, group_argv(g) if len(g) > 1 else base_argv(g[0])))
    return jobs


def describe_plan(jobs: Sequence[Job], runs: Sequence[Run], defaults=None,
                  finished: Iterable[Run] = ()) -> list[str]:
    """Human-readable grouping: which runs share a process and which fields keep the others apart;
    ``finished`` runs (left out of the groups, skipped) are listed on their own."""
    finished_names = {r.name for r in finished}
    done = [j for j in jobs if len(j.runs) == 1 and j.runs[0].name in finished_names]
    jobs = [j for j in jobs if j not in done]
    lines = []
    grouped = [j for j in jobs if len(j.runs) > 1]
    solo = [j for j in jobs if len(j.runs) == 1]
    lines.append(f"plan: {len(runs)} run(s) in {len(jobs)} process(es); {sum(len(j.runs) for j in grouped)} "
                 f"run(s) vectorized in {len(grouped)} group(s)"
                 + (f"; {len(done)} finished run(s) skipped" if done else ""))
    for j in grouped:
        lines.append(f"  vectorized x{len(j.runs)}: {', '.join(r.name for r in j.runs)}")
    if done:
        lines.append(f"  finished (skipped, not regrouped): {', '.join(j.runs[0].name for j in done)}")
    if solo and len(runs) > 1:
        keys = {k for r in runs for k in r.overrides}
        apart = sorted({k for k in keys if not is_vectorizable_field(k)
                        and len({repr(_effective(r, defaults, k)) for r in runs}) > 1})
        why = (f" (they differ in shape-changing fields: {', '.join(apart)})" if apart else "")
        lines.append(f"  separate processes{why}: {', '.join(j.runs[0].name for j in solo)}")
    return lines


# ----------------------------------------------------------------------------------------------------
# Loading an experiment file
# ----------------------------------------------------------------------------------------------------


def split_config_arg(experiment: str) -> tuple[str, str | None]:
    """``experiments/x.py:arg`` (config_flags syntax) -> (path, arg)."""
    if ":" in experiment and not os.path.exists(experiment):
        path, arg = experiment.rsplit(":", 1)
        if path.endswith(".py"):
            return path, arg
    return experiment, None


def load_module(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no experiment file {path!r}")
    mod_name = "_jaxvae_experiment_" + sanitize(os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(fn, arg):
    try:
        nparams = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        nparams = 0
    return fn(arg) if (arg is not None and nparams >= 1) else fn()


def load_sweep(experiment: str) -> tuple[Sweep, Any]:
    """The experiment's points and its module."""
    path, arg = split_config_arg(experiment)
    module = load_module(path)
    get_sweep = getattr(module, "get_sweep", None)
    points = normalize_sweep(_call(get_sweep, arg) if get_sweep is not None else None)
    return points, module


def check_overrides(module, arg, keys: Iterable[str]) -> list[str]:
    """Sweep keys that are not fields of the experiment's config (best effort; [] if it can't tell)."""
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        return []
    try:
        config = _call(get_config, arg)
    except Exception:  # noqa: BLE001 - the runner will report it
        return []
    bad = []
    for key in keys:
        node = config
        for part in key.split("."):
            try:
                node = node[part]
            except (KeyError, TypeError, AttributeError):
                bad.append(key)
                break
    return bad


def experiment_stem(experiment: str) -> str:
    path, arg = split_config_arg(experiment)
    stem = os.path.splitext(os.path.basename(path))[0]
    return sanitize(stem + (f"_{arg}" if arg else ""))


def make_runs(experiment: str, root: str = "runs") -> tuple[list[Run], str]:
    points, module = load_sweep(experiment)
    _, arg = split_config_arg(experiment)
    bad = check_overrides(module, arg, {k for p in points for k in p})
    if bad:
        raise ValueError(f"{experiment}: sweep keys not in the config: {', '.join(sorted(bad))}")
    sweep_dir = os.path.join(root, experiment_stem(experiment))
    names = run_names(points)
    runs = [Run(i, n, os.path.join(sweep_dir, n), p) for i, (n, p) in enumerate(zip(names, points))]
    return runs, sweep_dir


# ----------------------------------------------------------------------------------------------------
# Run state
# ----------------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def run_state(workdir: str) -> str:
    """finished | running | preempted | failed | new (nothing there yet) | unknown."""
    results = _read_json(os.path.join(workdir, "results.json"))
    status = _read_json(os.path.join(workdir, "status.json"))
    if results is not None:
        s = (status or {}).get("status") or results.get("status") or "finished"
        return str(s)
    if status is not None:
        return str(status.get("status", "unknown"))
    if os.path.exists(os.path.join(workdir, "log.txt")) or os.path.exists(os.path.join(workdir, "launch.json")):
        return "unknown"
    return "new"


def is_finished(workdir: str) -> bool:
    """results.json present and the run's status is "finished" (status.json, else results.json)."""
    results = _read_json(os.path.join(workdir, "results.json"))
    if results is None:
        return False
    status = _read_json(os.path.join(workdir, "status.json"))
    s = (status or {}).get("status") if status else results.get("status", "finished")
    return s == "finished"


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
    state: str  # finished | skipped | failed | preempted | not started
    exit_code: int | None = None
    seconds: float = 0.0
    device: str | None = None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


class _Launcher:
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

    def _start(self, i: int, job: Job) -> None:
        for r in job.runs:
            if not _is_url(r.workdir):
                os.makedirs(r.workdir, exist_ok=True)
        os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
        env = dict(os.environ)
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
        log.write(f"\n=== {_now()} launch on {socket.gethostname()}"
                  f"{'' if dev is None else ' CUDA_VISIBLE_DEVICES=' + dev}"
                  f"{'' if cores is None else ' cpus=' + ','.join(map(str, cores))}: {cmd}\n".encode())
        log.flush()
        proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True,
                                preexec_fn=None if cores is None else (lambda: os.sched_setaffinity(0, cores)))
        start = time.time()
        _write_json(job.launch_path,
                    {"command": cmd, "argv": job.argv, "start": _now(), "end": None, "exit_code": None,
                     "host": socket.gethostname(), "pid": proc.pid, "device": dev})
        self.running[i] = (proc, job, start, dev, log)
        where = "" if dev is None else f" [GPU {dev}]"
        print(f"[{i + 1}/{len(self.jobs)}] start  {job.name}{where}  (log: {job.log_path})", flush=True)

    def _finish(self, i: int, rc: int) -> None:
        proc, job, start, dev, log = self.running.pop(i)
        self.slot_of.pop(i, None)
        log.close()
        secs = time.time() - start
        info = _read_json(job.launch_path) or {}
        info.update(end=_now(), exit_code=rc, seconds=round(secs, 1))
        _write_json(job.launch_path, info)
        if rc == 0:
            state = "finished"
        elif rc == EXIT_PREEMPTED or (self.stop and rc in (-signal.SIGTERM, 128 + signal.SIGTERM)):
            state = "preempted"
        else:
            state = "failed"
        self.outcomes[i] = Outcome(job, state, rc, secs, dev)
        msg = {"finished": "done  ", "preempted": "PREEMPTED", "failed": "FAILED"}[state]
        tail = "" if state == "finished" else f" (exit {rc}; log: {job.log_path})"
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
                    self._start(i, self.jobs[i])
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
        if len(o.job.runs) == 1 or o.state in ("skipped", "not started"):
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
    for state in ("finished", "skipped", "preempted", "not started", "failed"):
        items = by_state.get(state, [])
        if not items:
            continue
        print(f"  {state}:", file=file)
        for o in items:
            extra = ""
            if state in ("failed", "preempted"):
                extra = f"  exit code {o.exit_code}, log: {o.job.log_path}"
            elif state == "finished":
                extra = f"  ({o.seconds:.1f}s)"
            for r in o.job.runs:
                print(f"    {r.workdir}{extra}", file=file)
    file.flush()


# ----------------------------------------------------------------------------------------------------
# Slurm and TPU VMs
# ----------------------------------------------------------------------------------------------------


def slurm_script(jobs: Sequence[Job], sweep_dir: str, args, cwd: str | None = None) -> str:
    cwd = os.path.abspath(cwd or os.getcwd())
    log_dir = os.path.abspath(os.path.join(sweep_dir, "slurm"))
    n = len(jobs)
    array = f"0-{n - 1}" + (f"%{args.parallel}" if args.parallel else "")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.job_name or 'jaxvae-' + os.path.basename(sweep_dir)}",
        f"#SBATCH --array={array}",
        f"#SBATCH --output={log_dir}/%A_%a.out",
        f"#SBATCH --chdir={cwd}",
        "#SBATCH --ntasks=1",
    ]
    for flag in ("partition", "time", "mem", "cpus_per_task", "gpus_per_task"):
        value = getattr(args, flag)
        if value not in (None, ""):
            lines.append(f"#SBATCH --{flag.replace('_', '-')}={value}")
    if args.requeue:
        lines += ["#SBATCH --requeue", "#SBATCH --signal=B:TERM@120"]
    for extra in args.sbatch_arg or []:
        lines.append(f"#SBATCH {extra}")
    runs = sum(len(j.runs) for j in jobs)
    groups = sum(len(j.runs) > 1 for j in jobs)
    first, k = [], 0
    for j in jobs:
        first.append(k)
        k += len(j.runs)
    lines += [
        "",
        f"# Written by: {shlex.join(['python', '-m', 'jaxvae.sweep'] + list(args.argv))}",
        f"# {n} array tasks for {runs} run(s), one task per process: a single run (jaxvae.main) or a vectorized",
        f"# group of runs (jaxvae.vectorized; {groups} task(s) here). Task i runs COMMANDS[i]; its runs' workdirs are",
        "# WORKDIRS[FIRST[i]] .. WORKDIRS[FIRST[i]+COUNT[i]-1] and its output is appended to the first one's",
        "# log.txt. " + ("A task whose runs all finished exits at once; an unfinished (or partly finished) one"
                         if not args.rerun else "(--rerun) Every task runs, even when its runs finished; each"),
        "# runs its command again, which resumes the unfinished runs from their checkpoints.",
        "set -uo pipefail",
        "",
        "WORKDIRS=(",
        *[f"  {shlex.quote(r.workdir)}" + (f"  # task {t}" if i == 0 else "")
          for t, j in enumerate(jobs) for i, r in enumerate(j.runs)],
        ")",
        f"FIRST=({' '.join(map(str, first))})",
        f"COUNT=({' '.join(str(len(j.runs)) for j in jobs)})",
        "COMMANDS=(",
        *[f"  {shlex.quote(shlex.join(j.argv))}" for j in jobs],
        ")",
        "",
        "finished() {  # as jaxvae.sweep.is_finished: results.json present and the run's status is finished",
        '  [[ -f "$1/results.json" ]] || return 1',
        '  local f="$1/status.json"',
        '  [[ -f "$f" ]] || f="$1/results.json"',
        '  grep -Eq \'"status" *: *"finished"\' "$f"',
        "}",
        "",
        'i="${SLURM_ARRAY_TASK_ID:?submit this script with sbatch (it is an array job)}"',
        'members=("${WORKDIRS[@]:${FIRST[$i]}:${COUNT[$i]}}")',
        'log="${members[0]}/log.txt"',
        "nfinished=0",
        'for w in "${members[@]}"; do',
        '  mkdir -p "$w"',
        '  if finished "$w"; then nfinished=$((nfinished + 1)); fi',
        "done",
    ]
    if not args.rerun:
        lines += [
            'if [[ $nfinished -eq ${#members[@]} ]]; then',
            '  echo "already finished: ${members[*]}"',
            "  exit 0",
            "fi",
        ]
    lines += [
        'echo "task $i on $(hostname): ${COMMANDS[$i]}"',
        'echo "log: $log"',
        'if [[ ${#members[@]} -gt 1 ]]; then',
        '  echo "vectorized group of ${#members[@]} runs, $nfinished of them finished already"',
        "fi",
        'echo "=== $(date -Is) slurm ${SLURM_ARRAY_JOB_ID:-?}_$i on $(hostname): ${COMMANDS[$i]}" >> "$log"',
        'for w in "${members[@]:1}"; do  # the other members of a group: where their log is',
        '  echo "=== $(date -Is) slurm ${SLURM_ARRAY_JOB_ID:-?}_$i on $(hostname): trained in a vectorized group'
        ' of ${#members[@]} runs; log: $log" >> "$w/log.txt"',
        "done",
        'eval "${COMMANDS[$i]}" >> "$log" 2>&1 &',
        "pid=$!",
        "# Forward SIGTERM (preemption, --signal=B:TERM@...) to the run: it checkpoints and exits 3.",
        'trap \'echo "SIGTERM: asking the run to checkpoint"; kill -TERM "$pid" 2>/dev/null\' TERM',
        'wait "$pid"; rc=$?',
        'while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done',
        'echo "exit code $rc"',
    ]
    if args.requeue:
        lines += [
            f"if [[ $rc -eq {EXIT_PREEMPTED} ]]; then",
            '  echo "preempted: requeueing ${SLURM_ARRAY_JOB_ID}_$i"',
            '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_$i"',
            "fi",
        ]
    lines += ['exit "$rc"', ""]
    return "\n".join(lines)


def tpu_command(job: Job, args) -> list[str]:
    """``gcloud compute tpus tpu-vm ssh NAME --worker=all --command='cd DIR && python3 -m ...'``: the
    same process (a run, or a vectorized group of runs) started on every host of a multi-host TPU VM (the
    repo must be checked out at ``--tpu-remote-dir`` on every host, and ``--root`` should be a shared path,
    e.g. gs://bucket/runs). The command is ``shlex``-quoted, so ``--overrides='[...]'`` reaches the remote
    shell intact."""
    remote = f"cd {args.tpu_remote_dir} && {shlex.join(job.argv)}"
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_hosts, "--worker=all"]
    if args.tpu_zone:
        cmd.append(f"--zone={args.tpu_zone}")
    if args.tpu_project:
        cmd.append(f"--project={args.tpu_project}")
    cmd.append(f"--command={remote}")
    return cmd


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.x=y`` / ``--config.x y`` (and everything after ``--``) from our flags."""
    ours, passthrough = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            passthrough += argv[i + 1:]
            break
        if a.startswith("--config."):
            if "=" in a or i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                passthrough.append(a)
            else:
                passthrough.append(f"{a}={argv[i + 1]}")
                i += 1
        else:
            ours.append(a)
        i += 1
    return ours, passthrough


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxvae.sweep",
        description="Run every point of an experiment's get_sweep() (one run each; finished runs are "
                    "skipped, unfinished ones resume). Extra --config.x=y arguments (and anything after "
                    "--) are passed to every run.",
        epilog="Examples: --list | --dry-run | --parallel 4 | --slurm --gpus-per-task=1 --time=4:00:00")
    p.add_argument("experiment", help="experiment file, e.g. experiments/iwae_mnist.py")
    p.add_argument("--root", default="runs", help="runs go to ROOT/<experiment stem>/<run name> (default: runs)")
    p.add_argument("--list", action="store_true", help="print the runs (workdir, overrides, state) and exit")
    p.add_argument("--dry-run", action="store_true", help="print the commands (or write the sbatch script) only")
    p.add_argument("--parallel", type=int, default=None,
                   help="runs at a time (default 1); with GPUs each run gets its own CUDA_VISIBLE_DEVICES, "
                        "round-robin. With --slurm: the array's concurrent task limit (%%N)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids to hand out (default: CUDA_VISIBLE_DEVICES or nvidia-smi -L)")
    p.add_argument("--only", action="append", default=None, metavar="RUN",
                   help="run only this run (name or index from --list; indices may be comma-separated); "
                        "repeatable")
    p.add_argument("--rerun", action="store_true", help="also relaunch finished runs (default: skip them)")
    p.add_argument("--no-report", action="store_true", help="don't print the report after the sweep")
    p.add_argument("--python", default=None, help="python executable for the runs (default: this one)")
    p.add_argument("--runner-module", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vectorize", type=int, default=None, metavar="N",
                   help="train up to N runs that differ only in the seed or in traced hyperparameters "
                        f"({', '.join(VECTORIZED_FIELDS)}) as one vectorized process (jaxvae.vectorized; "
                        "with --slurm one array task, with --tpu-hosts one gcloud command per group). "
                        f"Default (with the default runner) N={DEFAULT_VECTORIZE} for local runs on a GPU/TPU "
                        "host, for --slurm when the sbatch options ask for GPUs (--gpus-per-task, "
                        "--sbatch-arg=--gpus=/--gres=gpu...), and for --tpu-hosts; otherwise off")
    p.add_argument("--no-vectorize", action="store_true", help="one process per run")
    p.add_argument("--no-pin", action="store_true",
                   help="with --parallel N on a host without GPUs, don't give each run its own share of the "
                        "CPUs (by default the CPUs are split into N slots and each run is pinned to one)")
    g = p.add_argument_group("Slurm (--slurm writes ROOT/<stem>/sweep.sbatch, an array job, and submits it)")
    g.add_argument("--slurm", action="store_true")
    g.add_argument("--job-name", default=None, help="default: jaxvae-<experiment stem>")
    g.add_argument("--partition", default=None)
    g.add_argument("--time", default=None, help="e.g. 4:00:00")
    g.add_argument("--mem", default=None, help="e.g. 32G")
    g.add_argument("--cpus-per-task", default=None)
    g.add_argument("--gpus-per-task", default=None)
    g.add_argument("--requeue", action="store_true",
                   help="SIGTERM 120 s before the time limit; a preempted run (exit 3) requeues its task")
    g.add_argument("--sbatch-arg", action="append", default=[],
                   help="extra '#SBATCH' line, repeatable: --sbatch-arg=--account=abc")
    t = p.add_argument_group("Multi-host TPU VM (each run, or vectorized group, is started on every host through "
                              "gcloud ssh)")
    t.add_argument("--tpu-hosts", default=None, metavar="TPU_NAME", help="TPU VM name")
    t.add_argument("--tpu-zone", default=None)
    t.add_argument("--tpu-project", default=None)
    t.add_argument("--tpu-remote-dir", default="~/jaxvae", help="repo checkout on the hosts (default ~/jaxvae)")
    return p


def _select(runs: list[Run], only: Sequence[str] | None) -> list[Run]:
    """--only values: a run name (``k=5,name=iwae``), an index from --list, or comma-separated indices."""
    if not only:
        return runs
    by_name = {r.name: r for r in runs}
    chosen: list[Run] = []
    for value in only:
        items = [value] if value in by_name else [v.strip() for v in value.split(",") if v.strip()]
        for item in items:
            if item in by_name:
                match = by_name[item]
            elif item.isdigit() and int(item) < len(runs):
                match = runs[int(item)]
            else:
                raise SystemExit(f"--only: no run {item!r} (see --list)")
            if match not in chosen:
                chosen.append(match)
    return sorted(chosen, key=lambda r: r.index)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, passthrough = split_passthrough(argv)
    args = build_parser().parse_args(ours)
    args.argv = argv
    try:
        runs, sweep_dir = make_runs(args.experiment, args.root)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    swept = {k for r in runs for k in r.overrides}
    clash = sorted({a.split("=", 1)[0][len("--config."):] for a in passthrough if a.startswith("--config.")} & swept)
    if clash:
        print(f"warning: --config.{', --config.'.join(clash)} overrides a swept field; every run gets the "
              f"command-line value and the run names no longer describe it", file=sys.stderr)

    if args.list:
        print(f"# {len(runs)} run(s) of {args.experiment} under {sweep_dir}")
        width = max(len(r.workdir) for r in runs)
        for r in runs:
            ov = " ".join(f"{k}={flag_value(v)}" for k, v in r.overrides.items()) or "(no overrides)"
            print(f"{r.index:3d}  {run_state(r.workdir):10s} {r.workdir:{width}s}  {ov}")
        return 0

    runs = _select(runs, args.only)
    python = args.python or (sys.executable if not args.tpu_hosts else "python3")
    runner = args.runner_module or os.environ.get(RUNNER_ENV) or DEFAULT_RUNNER

    def base_argv(run: Run) -> list[str]:
        return [python, "-m", runner, f"--config={args.experiment}", f"--workdir={run.workdir}",
                *run.override_args(), *passthrough]

    vectorize = _vectorize_setting(args, runner)
    vec_module = os.environ.get(VECTORIZED_RUNNER_ENV) or VECTORIZED_RUNNER
    defaults = _config_defaults(args.experiment) if vectorize else None
    todo = runs
    if vectorize and not args.rerun and not args.tpu_hosts:
        # Finished runs are left out of the groups (a finished member of a group would be restored and
        # evaluated again); they stay single-run jobs that the launcher, or the Slurm task, skips. With
        # --tpu-hosts the launcher cannot see the remote workdirs.
        todo = [r for r in runs if not is_finished(r.workdir)]

    def group_argv(group: Sequence[Run]) -> list[str]:
        return vectorized_argv(python, vec_module, args.experiment, group, passthrough)

    jobs = plan_jobs(todo, base_argv, vectorize, group_argv, defaults)
    jobs += [Job([r], base_argv(r)) for r in runs if r not in todo]
    jobs.sort(key=lambda j: j.runs[0].index)
    if vectorize and not args.list:
        for line in describe_plan(jobs, runs, defaults, [r for r in runs if r not in todo]):
            print(line, file=sys.stderr, flush=True)
    elif (args.slurm and not args.no_vectorize and args.vectorize is None and runner == DEFAULT_RUNNER
          and len(runs) > 1 and any(len(g) > 1 for g in
                                    group_runs(runs, DEFAULT_VECTORIZE, _config_defaults(args.experiment)))):
        print("note: one Slurm array task per run: the sbatch options request no GPU (--gpus-per-task, "
              "--sbatch-arg=--gpus=N or --gres=gpu:N), so runs are not vectorized; --vectorize N groups "
              "them anyway", file=sys.stderr, flush=True)

    if args.slurm:
        os.makedirs(os.path.join(sweep_dir, "slurm"), exist_ok=True)
        path = os.path.join(sweep_dir, "sweep.sbatch")
        with open(path, "w") as f:
            f.write(slurm_script(jobs, sweep_dir, args))
        os.chmod(path, 0o755)
        _write_manifest(sweep_dir, args, runs, jobs)
        groups = sum(len(j.runs) > 1 for j in jobs)
        print(f"wrote {path} ({len(jobs)} array tasks for {len(runs)} run(s)"
              + (f", {groups} of them vectorized groups" if groups else "")
              + f"; Slurm output: {sweep_dir}/slurm/, run logs: <workdir>/log.txt"
              + (", a group's in its first run's" if groups else "") + ")")
        if args.dry_run:
            print(f"submit with: sbatch {shlex.quote(path)}")
            return 0
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            print("error: sbatch not found on PATH (use --dry-run to only write the script)", file=sys.stderr)
            return 2
        proc = subprocess.run([sbatch, path], capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode

    if args.tpu_hosts:
        # The runs write their workdirs on the TPU hosts (or a bucket); the local logs of the ssh
        # sessions go to runs/<stem>/tpu_logs/<name>/ (under --root when it is a local path).
        log_root = os.path.join("runs" if _is_url(sweep_dir) else args.root, experiment_stem(args.experiment),
                                "tpu_logs")
        jobs = [Job(j.runs, tpu_command(j, args), os.path.join(log_root, j.label)) for j in jobs]
        if args.parallel and args.parallel > 1:
            print("warning: --tpu-hosts runs one process (a run or a vectorized group) at a time (each "
                  "uses every host)", file=sys.stderr)
        args.parallel = 1

    if args.dry_run:
        for j in jobs:
            done = (not args.tpu_hosts and not args.rerun and all(is_finished(r.workdir) for r in j.runs))
            print(("# finished, would skip: " if done else "") + shlex.join(j.argv))
        return 0

    gpus = [g for g in args.gpus.split(",") if g.strip()] if args.gpus else visible_gpus()
    parallel = args.parallel or 1
    if parallel > 1:
        print(f"running {len(jobs)} run(s), {parallel} at a time"
              + (f" on GPUs {','.join(gpus)}" if gpus else " (CPU processes)"), flush=True)
    _write_manifest(sweep_dir, args, runs, jobs)
    outcomes = _Launcher(jobs, parallel, gpus, skip_finished=not (args.rerun or args.tpu_hosts),
                         pin_cpus=not args.no_pin).run()
    outcomes = per_run_outcomes(outcomes)
    print_summary(outcomes)

    if not args.no_report and not args.tpu_hosts and not _is_url(sweep_dir) and os.path.isdir(sweep_dir):
        try:
            from jaxvae import report  # noqa: PLC0415 - keep this module import-light
            text = report.write_report(sweep_dir, verbose=False)
            print("\n" + text)
        except Exception as e:  # noqa: BLE001 - a report problem must not hide the sweep's result
            print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)

    states = {o.state for o in outcomes}
    if "failed" in states:
        return 1
    if states & {"preempted", "not started"}:
        return EXIT_PREEMPTED
    return 0


def _vectorize_setting(args, runner: str) -> int | None:
    """The group-size cap: --no-vectorize -> None; --vectorize N -> N (None for N <= 1); by default (only
    with the default runner module) DEFAULT_VECTORIZE where the runs get an accelerator: local runs on a
    GPU/TPU host, --slurm launches whose sbatch options request GPUs (the submitting login node usually has
    none, so its own devices say nothing), --tpu-hosts launches; otherwise None (one process per run)."""
    if args.no_vectorize:
        return None
    if args.vectorize is not None:
        return args.vectorize if args.vectorize > 1 else None
    if runner != DEFAULT_RUNNER:
        return None
    # Default on accelerators only: on a CPU one run of these models already keeps the cores busy, and the
    # vmapped program measured slower than sequential runs (docs/vectorized.md).
    if args.slurm:
        return DEFAULT_VECTORIZE if slurm_requests_gpus(args) else None
    if args.tpu_hosts:
        return DEFAULT_VECTORIZE
    return DEFAULT_VECTORIZE if has_accelerator() else None


_SLURM_GPU_COUNT_FLAGS = ("--gpus", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket", "-G")


def _gpu_count(spec: str) -> int:
    """``1``, ``a100:2``, ``gpu:a100:2``, ``gpu`` (one) -> the count (0 for ``0``/``a100:0``)."""
    last = spec.strip().rsplit(":", 1)[-1]
    return int(last) if last.isdigit() else 1


def slurm_requests_gpus(args) -> bool:
    """Do the sbatch options ask for GPUs: --gpus-per-task=N (N > 0), or --sbatch-arg with --gpus,
    --gpus-per-node/-task/-socket, -G, --gres=gpu[:type][:N] or --tres-per-task=gres/gpu...?"""
    if args.gpus_per_task not in (None, "") and _gpu_count(str(args.gpus_per_task)) > 0:
        return True
    for extra in args.sbatch_arg or []:
        m = re.match(r"\s*(--?[A-Za-z-]+)(?:=|\s+)(\S+)", extra)
        if not m:
            continue
        flag, value = m.groups()
        if flag in _SLURM_GPU_COUNT_FLAGS and _gpu_count(value) > 0:
            return True
        if flag in ("--gres", "--tres-per-task", "--tres-per-node"):
            for item in value.split(","):
                item = item.split("/", 1)[-1]  # gres/gpu:2 -> gpu:2
                if (item == "gpu" or item.startswith(("gpu:", "gpu="))) and _gpu_count(
                        item.replace("=", ":")) > 0:
                    return True
    return False


def has_accelerator() -> bool:
    """A GPU (CUDA_VISIBLE_DEVICES / nvidia-smi) or a TPU (/dev/accel*, /dev/vfio) on this host."""
    import glob

    return bool(visible_gpus() or glob.glob("/dev/accel*") or os.environ.get("TPU_NAME"))


def _config_defaults(experiment: str) -> dict | None:
    """The experiment's config as {dotted path: value} (None when it cannot be loaded here)."""
    path, arg = split_config_arg(experiment)
    try:
        module = load_module(path)
        config = _call(module.get_config, arg)
    except Exception:  # noqa: BLE001 - grouping then treats fields set by only some runs as different
        return None

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            if hasattr(v, "items"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
        return out

    try:
        return flat(config)
    except Exception:  # noqa: BLE001
        return None


def _is_url(path: str) -> bool:
    return "://" in path


def _write_manifest(sweep_dir: str, args, runs: Sequence[Run], jobs: Sequence[Job]) -> None:
    """ROOT/<stem>/sweep.json: the planned runs, so the report can list runs that never started."""
    if _is_url(sweep_dir):
        return
    os.makedirs(sweep_dir, exist_ok=True)
    path = os.path.join(sweep_dir, "sweep.json")
    old = _read_json(path) or {}
    known = {r["name"]: r for r in old.get("runs", []) if isinstance(r, dict) and "name" in r}
    job_of = {r.name: j for j in jobs for r in j.runs}
    for r in runs:
        j = job_of.get(r.name)
        if j is None:
            continue
        known[r.name] = {"name": r.name, "index": r.index,
                         "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in r.overrides.items()},
                         "command": shlex.join(j.argv)}
    _write_json(path, {"experiment": args.experiment, "updated": _now(), "runs": list(known.values())})


if __name__ == "__main__":
    sys.exit(main())
