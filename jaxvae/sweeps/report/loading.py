"""Loading the runs under a folder and reading their results.json: the run folders as ``RunRecord``s
(``load_runs``, with the runs a ``sweep.json`` planned that left no files, and each run's place in the
sweep's declared order), ``read_json``, dotted ``lookup``s, ``number``s, the flattened config, a run's
``identity`` and sort order, mean ± std over seeds and the formatting of a cell.

Imports only the standard library and ``jaxvae.experiment.protocol``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from jaxvae.experiment.configs import upgrade_config_dict
from jaxvae.experiment.protocol import EXIT_PREEMPTED

RUN_FILES = ("results.json", "status.json", "launch.json")
PRUNE_DIRS = {"checkpoints", "checkpoint", "ckpt", "images", "tb", "tensorboard", "slurm", ".git",
              "mlruns", "wandb"}  # tracking stores hold copies of results.json: not runs


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


def read_json(path: str) -> Any:
    """The file's JSON value; None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class RunRecord:
    path: str  # the run's workdir
    name: str  # path relative to the report root
    status: str  # finished | running | preempted | failed | not started | unknown ...
    results: dict | None = None
    status_json: dict | None = None
    launch: dict | None = None
    planned: dict | None = None  # its entry in a sweep.json manifest (name, index, overrides, command)
    order: tuple | None = None  # its place in the sweep's declared order (manifest found, index)

    @property
    def finished(self) -> bool:
        return self.results is not None and self.status == "finished"

    @property
    def log_path(self) -> str | None:
        p = os.path.join(self.path, "log.txt")
        return p if os.path.exists(p) else None

    @property
    def message(self) -> str:
        return str((self.status_json or {}).get("message") or (self.results or {}).get("message") or "")

    @property
    def step(self) -> Any:
        return (self.status_json or {}).get("step")

    @property
    def exit_code(self) -> Any:
        return (self.launch or {}).get("exit_code")


def _classify(results, status_json, launch) -> str:
    if results is not None:
        return str(results.get("status") or (status_json or {}).get("status") or "finished")
    status = (status_json or {}).get("status")
    rc = (launch or {}).get("exit_code")
    if launch and launch.get("end") and rc is not None:  # the launcher saw the process end
        if rc == EXIT_PREEMPTED:
            return "preempted"
        if rc != 0 or status in (None, "running", "finished"):
            return "failed"
    return str(status or "unknown")


def load_runs(root: str) -> list[RunRecord]:
    """Every run folder under root (one holding results.json, status.json or launch.json), plus the
    runs a ``sweep.json`` manifest planned that left no files ("not started")."""
    records: dict[str, RunRecord] = {}
    planned: dict[str, tuple[dict, tuple]] = {}  # path -> (manifest entry, declared order)
    manifests = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in PRUNE_DIRS)
        if "sweep.json" in filenames:
            manifest = read_json(os.path.join(dirpath, "sweep.json"))
            runs = manifest.get("runs") if isinstance(manifest, dict) else None
            for i, r in enumerate(runs if isinstance(runs, list) else []):
                if isinstance(r, dict) and isinstance(r.get("name"), str):
                    index = r.get("index") if isinstance(r.get("index"), int) else i
                    planned[os.path.normpath(os.path.join(dirpath, r["name"]))] = (r, (manifests, index, i))
            manifests += 1
        if not any(f in filenames for f in RUN_FILES):
            continue
        dirnames[:] = []  # a run folder: its subfolders are checkpoints, pictures...
        results = read_json(os.path.join(dirpath, "results.json")) if "results.json" in filenames else None
        status_json = read_json(os.path.join(dirpath, "status.json"))
        launch = read_json(os.path.join(dirpath, "launch.json"))
        if "results.json" in filenames and not isinstance(results, dict):
            results, status = None, "unreadable results.json"
        else:
            if results is not None and isinstance(results.get("config"), dict):
                # a run written before the flat fields moved into option blocks reads as today's layout,
                # so that a sweep mixing old and new runs compares the same fields
                results["config"] = upgrade_config_dict(results["config"])
            status = _classify(results, status_json if isinstance(status_json, dict) else None,
                               launch if isinstance(launch, dict) else None)
        path = os.path.normpath(dirpath)
        records[path] = RunRecord(path, _rel(path, root), status, results,
                                  status_json if isinstance(status_json, dict) else None,
                                  launch if isinstance(launch, dict) else None)
    for path, (entry, order) in planned.items():
        if path not in records:
            records[path] = RunRecord(path, _rel(path, root), "not started")
        records[path].planned, records[path].order = entry, order
    return sorted(records.values(), key=lambda r: r.name)


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return os.path.basename(os.path.normpath(path)) if rel == "." else rel


# ----------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------


def lookup(d: Any, dotted: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``; None when a part is missing."""
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _first(results: dict, *paths: str) -> Any:
    for p in paths:
        v = lookup(results, p)
        if v is not None:
            return v
    return None


def number(v: Any) -> float | None:
    """v as a finite float (numbers and numeric strings); None for booleans, None, text, NaN and inf."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A results.json's nested dict (its config) as {dotted path: value}, lists as tuples."""
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out.update(flatten(v, key))
            else:
                out[key] = tuple(v) if isinstance(v, list) else v
    return out


# Identity of a run: (column, summary key, config fallback).
IDENTITY = [
    ("dataset", "summary.dataset", "config.data.name"),
    ("objective", "summary.objective", "config.objective.name"),
    ("k", "summary.k", "config.objective.k"),
    ("flow", "summary.flow", "config.model.flow"),
    ("flow_length", "summary.flow_length", "config.model.flow_length"),
    ("beta", "summary.beta", "config.objective.beta"),
    ("latent_dim", "summary.latent_dim", "config.model.latent_dim"),
    ("seed", "summary.seed", "config.seed"),
]


def identity(results: dict) -> dict[str, Any]:
    return {col: _first(results, s, c) for col, s, c in IDENTITY}


def sort_key(r: RunRecord):
    """Runs in the order of their identity columns (numbers before text), then by name."""
    ident = identity(r.results)
    def k(v):
        return (0, float(v), "") if number(v) is not None else (1, 0.0, str(v))
    return tuple(k(ident[c]) for c, _, _ in IDENTITY) + (r.name,)


def mean_std(values: Sequence[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None below two values) and count of the numbers among values."""
    xs = [x for x in (number(v) for v in values) if x is not None]
    if not xs:
        return None, None, 0
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var), len(xs)


def fmt_value(v: Any, decimals: int) -> str:
    """A table cell: a number with ``decimals`` decimals, text as is, blank when missing."""
    x = number(v)
    if x is None:
        return "" if v is None or isinstance(v, (int, float)) else str(v)
    if decimals == 0:
        return str(int(round(x)))
    return f"{x:.{decimals}f}"


def fmt_id(v: Any) -> str:
    """An identity cell (``0.001``, ``iwae``); blank when missing."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


