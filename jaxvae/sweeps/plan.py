"""Planning a sweep: loading an experiment file, naming its runs, grouping them into jobs (vectorized
groups), and reading each run's state from its workdir."""


from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxvae.experiment.protocol import is_vectorizable_field
from jaxvae.sweeps.declare import (MAX_NAME_LEN, Point, Sweep, normalize_sweep)

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
    (``jaxvae.main``) or a vectorized group of runs trained by one ``jaxvae.experiment.vectorized`` process, see
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
    """The command that trains ``runs`` in one process (``python -m jaxvae.experiment.vectorized``)."""
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


def call_sweep_function(fn, arg):
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
    points = normalize_sweep(call_sweep_function(get_sweep, arg) if get_sweep is not None else None)
    return points, module


def check_overrides(module, arg, keys: Iterable[str]) -> list[str]:
    """Sweep keys that are not fields of the experiment's config (best effort; [] if it can't tell)."""
    get_config = getattr(module, "get_config", None)
    if get_config is None:
        return []
    try:
        config = call_sweep_function(get_config, arg)
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


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def run_state(workdir: str) -> str:
    """finished | running | preempted | failed | new (nothing there yet) | unknown."""
    results = read_json(os.path.join(workdir, "results.json"))
    status = read_json(os.path.join(workdir, "status.json"))
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
    results = read_json(os.path.join(workdir, "results.json"))
    if results is None:
        return False
    status = read_json(os.path.join(workdir, "status.json"))
    s = (status or {}).get("status") if status else results.get("status", "finished")
    return s == "finished"


def is_url(path: str) -> bool:
    return "://" in path
