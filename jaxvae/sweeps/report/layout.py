"""The compact layout of a sweep's tables: which config fields differ between the runs (the sweep's grouping
fields, one column each), how they name a run (``2 layers, iwae k=5, seed=1``), which settings every run
shares (the one "common settings" line above the tables) and the order of the rows (the sweep's declared
order from its ``sweep.json``, else by the grouping fields; never alphabetical by folder name).

A grouping field is a config field (dotted path) whose value differs between the runs, with the flow kind
and length read as one field (``planar×4``). Where the data, logs and trackers live is never one. A
companion field whose value follows from its leader in this sweep (``model.latent_dims`` from
``model.stochastic_layers``, ``data.valid_size`` from ``data.name``) stays out of the run names and the
default HTML columns (it is a details column).

Imports only the standard library and ``jaxvae.sweeps.report.loading``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from jaxvae.sweeps.report.loading import IDENTITY, RunRecord, flatten, fmt_id, lookup, number

# Config fields that never group runs: file locations, trackers, devices, the checkpoint a run starts from.
NOT_GROUPING = ("imports", "data.manual_dir", "data.data_dir", "data.download", "train.init_from",
                "tracking.", "parallel.")

# The order of the fields in run names and columns; other fields follow in the sweep's declared order, then
# alphabetically; the seed comes last.
FIELD_ORDER = ["name", "data.name", "data.binarize", "model.network", "model.stochastic_layers", "model.latent_dims",
               "model.latent_dim", "model.prior", "model.likelihood", "objective.name", "objective.k",
               "objective.m", "objective.beta_ciwae", "model.flow", "objective.beta", "objective.kl_warmup_steps",
               "train.learning_rate", "train.batch_size", "train.budget", "train.num_epochs"]

HEADERS = {"name": "experiment", "data.name": "dataset", "model.stochastic_layers": "layers",
           "objective.name": "objective", "objective.k": "k", "model.flow": "flow", "objective.beta": "beta",
           "model.latent_dim": "latent_dim", "seed": "seed"}

COMPANIONS = {"model.latent_dims": "model.stochastic_layers", "data.valid_size": "data.name"}

# The settings the "common settings" line names when every run shares them: (field, name).
COMMON = [("name", "experiment"), ("data.name", "dataset"), ("data.binarize", "binarize"),
          ("model.network", "network"), ("model.stochastic_layers", "layers"), ("model.latent_dims", "latent_dims"),
          ("model.latent_dim", "latent_dim"), ("model.encoder_hidden", "encoder"),
          ("model.decoder_hidden", "decoder"), ("model.activation", "activation"), ("model.prior", "prior"),
          ("model.likelihood", "likelihood"), ("objective.name", "objective"), ("objective.k", "k"),
          ("model.flow", "flow"), ("objective.beta", "beta"), ("train.batch_size", "batch"),
          ("train.learning_rate", "learning_rate"), ("train.schedule", "schedule"), ("train.budget", "budget"),
          ("seed", "seed")]

# ... and results every run shares: (results.json path, name).
COMMON_RESULTS = [("train.epochs", "passes"), ("test.num_examples", "test examples")]

FLOW_KEYS = ("model.flow", "model.flow_length")


def flow_label(flow: Any, length: Any) -> str:
    """``planar×8`` (kind x length); ``none`` without a flow."""
    if flow in (None, "", "none"):
        return "none"
    return f"{flow}×{length}" if length is not None else str(flow)


def settings(run: RunRecord) -> dict[str, Any]:
    """The run's config as {dotted field: value} (older results.json: the identity fields from the
    summary), the flow kind and length as one ``model.flow`` value."""
    results = run.results or {}
    flat = flatten(results.get("config") or {})
    for _, summary_path, config_path in IDENTITY:
        field = config_path.removeprefix("config.")
        if flat.get(field) is None and lookup(results, summary_path) is not None:
            flat[field] = lookup(results, summary_path)
    if any(k in flat for k in FLOW_KEYS):
        flat["model.flow"] = flow_label(flat.get("model.flow"), flat.pop("model.flow_length", None))
    return flat


def fmt_setting(v: Any) -> str:
    """A setting as text: ``0.001``, ``iwae``, ``(100, 50)``; blank when missing."""
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(fmt_setting(x) for x in v) + ")"
    return fmt_id(v)


def _sort_value(v: Any) -> tuple:
    if v is None:
        return (0, 0.0, "")
    if number(v) is not None:
        return (1, float(v), "")
    return (2, 0.0, fmt_setting(v))


@dataclasses.dataclass
class Field:
    path: str  # dotted config path
    header: str  # column header
    numeric: bool  # every value a number
    companion: bool  # follows from its leader: not in run names, a details column in HTML


@dataclasses.dataclass
class Layout:
    fields: list[Field]  # the grouping fields, in naming order (companions included)
    others: list[str]  # fields that differ but never group (paths, trackers): CSV only
    common: list[tuple[str, str]]  # (name, value) every run shares
    values: dict[str, dict[str, Any]]  # run path -> settings

    def value(self, run: RunRecord, path: str) -> Any:
        return self.values[run.path].get(path)

    def cell(self, run: RunRecord, path: str) -> str:
        return fmt_setting(self.value(run, path))

    def label(self, run: RunRecord, skip: Sequence[str] = ()) -> str:
        """The run's name from its grouping fields (companions and ``skip`` left out):
        ``2 layers, iwae k=5, seed=1``."""
        parts: list[str] = []
        prev = None
        for f in self.fields:
            if f.companion or f.path in skip:
                continue
            v = self.value(run, f.path)
            text = fmt_setting(v)
            if f.path == "model.stochastic_layers" and number(v) is not None:
                parts.append(f"{text} layer{'' if float(v) == 1 else 's'}")
            elif f.path in ("data.name", "objective.name", "name"):
                parts.append(text or "?")
            elif f.path == "objective.k" and prev == "objective.name":
                parts[-1] += f" k={text}"
            else:
                parts.append(f"{f.header}={text}")
            prev = f.path
        return ", ".join(parts)

    def labels(self, runs: Sequence[RunRecord], skip: Sequence[str] = (), empty: str | None = None
               ) -> dict[str, str]:
        """{run path: label}, unique (a label two runs share gets the folder name added); a run without
        grouping fields is called ``empty`` (default: its folder name)."""
        out = {r.path: self.label(r, skip) or (empty or r.name) for r in runs}
        counts: dict[str, int] = {}
        for text in out.values():
            counts[text] = counts.get(text, 0) + 1
        return {r.path: out[r.path] if counts[out[r.path]] == 1 else f"{out[r.path]} ({r.name})" for r in runs}

    def order(self, runs: Sequence[RunRecord]) -> list[RunRecord]:
        """The sweep's declared order when every run is in a sweep.json, else by the grouping fields."""
        if runs and all(r.order is not None for r in runs):
            return sorted(runs, key=lambda r: (r.order, r.name))
        return sorted(runs, key=lambda r: tuple(_sort_value(self.value(r, f.path)) for f in self.fields)
                      + (r.name,))

    def common_line(self) -> str:
        """``Common settings: dataset=binarized_mnist, ...`` (blank when nothing is shared)."""
        return "Common settings: " + ", ".join(f"{k}={v}" for k, v in self.common) if self.common else ""


def _declared(runs: Sequence[RunRecord]) -> list[str]:
    keys: list[str] = []
    for r in runs:
        for k in (r.planned or {}).get("overrides") or {}:
            k = "model.flow" if k == "model.flow_length" else k
            if k not in keys:
                keys.append(k)
    return keys


def _header(path: str, paths: Sequence[str]) -> str:
    if path in HEADERS:
        return HEADERS[path]
    short = path.rsplit(".", 1)[-1]
    return short if sum(p.rsplit(".", 1)[-1] == short for p in paths) == 1 else path


def _follows(runs_values: list[dict], field: str, leader: str) -> bool:
    """Whether the field's value is a function of the leader's across the runs."""
    seen: dict[str, str] = {}
    for v in runs_values:
        a, b = repr(v.get(leader)), repr(v.get(field))
        if seen.setdefault(a, b) != b:
            return False
    return True


def layout(runs: Sequence[RunRecord]) -> Layout:
    """The layout of the finished ``runs``' tables."""
    values = {r.path: settings(r) for r in runs}
    vals = list(values.values())
    keys = sorted({k for v in vals for k in v})
    differing = [k for k in keys if len({repr(v.get(k)) for v in vals}) > 1]
    grouping = [k for k in differing if not k.startswith(NOT_GROUPING) and k not in NOT_GROUPING]
    declared = _declared(runs)

    def rank(k):
        if k == "seed":
            return (3, 0, k)
        if k in FIELD_ORDER:
            return (0, FIELD_ORDER.index(k), k)
        return (1, declared.index(k), k) if k in declared else (2, 0, k)

    grouping.sort(key=rank)
    fields = []
    for k in grouping:
        nums = [v.get(k) for v in vals if v.get(k) is not None]
        leader = COMPANIONS.get(k)
        companion = leader in grouping and _follows(vals, k, leader)
        fields.append(Field(k, _header(k, grouping), bool(nums) and all(number(x) is not None for x in nums),
                            companion))
    common = []
    for k, name in COMMON:
        shared = {repr(v.get(k)) for v in vals}
        if vals and len(shared) == 1 and vals[0].get(k) not in (None, (), ""):
            common.append((name, fmt_setting(vals[0][k])))
    for path, name in COMMON_RESULTS:
        shared = {repr(lookup(r.results, path)) for r in runs}
        if runs and len(shared) == 1 and number(lookup(runs[0].results, path)) is not None:
            common.append((name, fmt_setting(lookup(runs[0].results, path))))
    return Layout(fields, [k for k in differing if k not in grouping], common, values)
