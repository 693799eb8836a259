"""The report's tables: ``Table`` (markdown and HTML), the per-run table and its CSV rows (``runs_table``),
mean ± std over seeds (``seeds_table``, runs grouped by ``seed_groups``), unfinished and failed runs
(``problems_table``), ``write_csv``; the metric columns (``METRICS``, ``metric_columns``, the core ones
``CORE_METRICS``) and the labels (``other_fields``, ``other_label``) the plots share.

The runs and seeds tables follow the sweep's layout (``jaxvae.sweeps.report.layout``): a column per
grouping field, settings every run shares in one "common settings" line (``Table.note``), rows in the
sweep's declared order. Their HTML shows the grouping fields and the core numbers (ELBO, IWAE_K, NLL,
active units) and puts the other columns behind a "details" toggle (``Table.detail``); markdown and CSV
keep every column.

Missing numbers (absent keys, ``null``) are blank cells. Standard deviations over seeds are sample
standard deviations (n - 1 in the denominator). Imports only the standard library and the report's
``loading`` and ``layout``.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from collections.abc import Sequence
from typing import Any

from jaxvae.sweeps.report.layout import layout
from jaxvae.sweeps.report.loading import (IDENTITY, RunRecord, flatten, fmt_id, fmt_value, identity, lookup, mean_std,
                                          number, sort_key)


@dataclasses.dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    detail: list[bool] | None = None  # columns behind the HTML "details" toggle
    grouping: list[bool] | None = None  # grouping-field columns: a filter box each in HTML
    keys: list[list[Any]] | None = None  # per cell: the number it sorts by (None: its text)
    md_columns: list[int] | None = None  # the markdown's columns, in order (default: all)
    note: str = ""  # the "common settings" line

    def markdown(self) -> str:
        def cell(s):
            return str(s).replace("|", "\\|").replace("\n", " ")
        cols = self.md_columns if self.md_columns is not None else range(len(self.headers))
        out = ["| " + " | ".join(cell(self.headers[i]) for i in cols) + " |",
               "|" + "|".join("---:" if self.numeric[i] else "---" for i in cols) + "|"]
        out += ["| " + " | ".join(cell(row[i]) for i in cols) + " |" for row in self.rows]
        return "\n".join(out)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f'<td class="{"num" if n else "txt"}">{html.escape(str(c))}</td>'
                                        for c, n in zip(row, self.numeric)) + "</tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------------------------------
# Columns and labels
# ----------------------------------------------------------------------------------------------------


SEED_KEYS = {"seed"}

# Config fields the identity columns already show (not repeated in the "other" column).
SHOWN_CONFIG = {"seed", "name", "data.name", "objective.name", "objective.k", "model.flow",
                "model.flow_length", "objective.beta", "model.latent_dim"}


METRICS = [  # (csv column, markdown header, results path, decimals)
    ("test_elbo", "test ELBO", "test.elbo", 2),
    # IWAE_K columns go here
    ("nll", "NLL", "test.nll", 2),
    ("bits_per_dim", "bits/dim", "test.bits_per_dim", 3),  # shown for 8-bit data (discretized likelihoods)
    ("exact_log_px", "exact log p(x)", "test.exact_log_px", 2),
    ("ais_log_px", "AIS log p(x)", "test.ais.log_px", 2),
    ("bdmc_width", "BDMC width", "test.bdmc.width", 2),
    ("approximation_gap", "approx. gap", "test.gaps.approximation_gap", 2),
    ("amortization_gap", "amort. gap", "test.gaps.amortization_gap", 2),
    ("active_units", "active units", "test.active_units", 0),
    ("rate", "rate R", "test.rate", 2),
    ("distortion", "distortion D", "test.distortion", 2),
    ("mutual_information", "MI", "test.mutual_information", 2),
    ("marginal_kl", "marginal KL", "test.marginal_kl", 2),
    ("mig", "MIG", "test.disentanglement.mig", 3),
    ("dci_disentanglement", "DCI D", "test.disentanglement.dci_disentanglement", 3),
    ("sample_manifold_rmse", "sample RMSE", "test.sample_manifold_rmse", 4),
    ("wall_time_s", "wall time (s)", "train.wall_time_s", 1),
]


# Columns left out when no run has the number (older results.json files, data without known factors).
OPTIONAL_METRICS = {"exact_log_px", "rate", "distortion", "mig", "dci_disentanglement", "sample_manifold_rmse",
                    "ais_log_px", "bdmc_width", "approximation_gap", "amortization_gap"}


@dataclasses.dataclass
class Column:
    key: str  # csv header
    header: str  # markdown header
    decimals: int
    get: Any  # RunRecord -> value


# The columns the HTML shows by default (with every IWAE_K); the others are details.
CORE_METRICS = ("test_elbo", "nll", "active_units", "exact_log_px", "bits_per_dim")


def is_core(col: Column) -> bool:
    return col.key in CORE_METRICS or col.key.startswith("iwae_")


def metric_columns(runs: Sequence[RunRecord]) -> list[Column]:
    ks = sorted({k for r in runs for k in (lookup(r.results, "test.iwae") or {}) if str(k).lstrip("-").isdigit()},
                key=int)
    ks = [int(k) for k in ks]
    nll_ks = {lookup(r.results, "test.nll_k") for r in runs if number(lookup(r.results, "test.nll")) is not None}
    cols = []
    for key, header, path, dec in METRICS:
        if key in OPTIONAL_METRICS and all(number(lookup(r.results, path)) is None for r in runs):
            continue
        if key == "bits_per_dim" and not any(
                str(lookup(r.results, "test.bits_per_dim_convention") or "").startswith("8-bit") for r in runs):
            continue
        if key == "nll":
            for k in ks:
                cols.append(Column(f"iwae_{k}", f"IWAE_{k}", 2,
                                   lambda r, k=k: lookup(r.results, f"test.iwae.{k}")))
            if len(nll_ks) == 1 and None not in nll_ks:
                header = f"NLL (K={nll_ks.pop()})"
        cols.append(Column(key, header, dec, lambda r, p=path: lookup(r.results, p)))
    return cols + weight_health_columns(runs)


def weight_health_columns(runs: Sequence[RunRecord]) -> list[Column]:
    """Importance-weight health at the NLL's K (results.json test.ess / test.pareto_k), when runs have it:
    mean and 10th percentile of the per-example ESS/K, and the share of examples with Pareto k-hat > 0.7."""
    def ess(r, stat):
        return lookup(r.results, f"test.ess.{lookup(r.results, 'test.nll_k')}.{stat}")

    cols = []
    if any(number(ess(r, "mean")) is not None for r in runs):
        cols += [Column("ess_mean", "ESS/K", 3, lambda r: ess(r, "mean")),
                 Column("ess_p10", "ESS/K p10", 3, lambda r: ess(r, "p10"))]
    if any(number(lookup(r.results, "test.pareto_k.frac_above_0_7")) is not None for r in runs):
        cols.append(Column("khat_above_0_7", "k-hat > 0.7", 3,
                           lambda r: lookup(r.results, "test.pareto_k.frac_above_0_7")))
    return cols


def other_fields(runs: Sequence[RunRecord]) -> list[str]:
    """Config fields (beyond the identity columns) whose values differ between runs."""
    flats = [flatten(r.results.get("config") or {}) for r in runs]
    keys = sorted({k for f in flats for k in f} - SHOWN_CONFIG)
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def other_label(run: RunRecord, fields: Sequence[str]) -> str:
    """``learning_rate=0.001 ...``: the run's values of ``fields`` (the last part of each dotted path, unless
    two fields share it)."""
    flat = flatten(run.results.get("config") or {})
    labels = {}
    for f in fields:
        short = f.rsplit(".", 1)[-1]
        labels[f] = f if sum(g.rsplit(".", 1)[-1] == short for g in fields) > 1 else short
    return " ".join(f"{labels[f]}={fmt_id(flat.get(f))}" for f in fields)


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------


# The config fields the identity columns of the CSV already hold.
IDENTITY_FIELDS = {path.removeprefix("config.") for _, _, path in IDENTITY} | {"model.flow_length"}


def _metric_cells(r: RunRecord, metric_cols: Sequence[Column], nll_in_cell: bool) -> tuple[list[str], list]:
    cells, keys = [], []
    for c in metric_cols:
        cell = fmt_value(c.get(r), c.decimals)
        if c.key == "nll" and nll_in_cell and cell and lookup(r.results, "test.nll_k") is not None:
            cell += f" (K={lookup(r.results, 'test.nll_k')})"
        cells.append(cell)
        keys.append(number(c.get(r)))
    return cells, keys


def runs_table(runs: Sequence[RunRecord]) -> tuple[Table, list[dict]]:
    """The per-run table and the CSV rows (raw values). Columns: the run's name from its grouping fields,
    a column per grouping field, the metrics, the folder (the markdown starts with the folder and leaves
    the name out: the grouping columns say it)."""
    lay = layout(runs)
    metric_cols = metric_columns(runs)
    nll_in_cell = not any(c.header.startswith("NLL (K=") for c in metric_cols)
    labels = lay.labels(runs)
    extra = [p for p in [f.path for f in lay.fields] + lay.others if p not in IDENTITY_FIELDS]  # CSV only
    headers = ["run"] + [f.header for f in lay.fields] + [c.header for c in metric_cols] + ["folder"]
    numeric = [False] + [f.numeric for f in lay.fields] + [True] * len(metric_cols) + [False]
    detail = [False] + [f.companion for f in lay.fields] + [not is_core(c) for c in metric_cols] + [True]
    grouping = [False] + [not f.companion for f in lay.fields] + [False] * (len(metric_cols) + 1)
    rows, keys, csv_rows = [], [], []
    for r in lay.order(runs):
        cells, mkeys = _metric_cells(r, metric_cols, nll_in_cell)
        rows.append([labels[r.path]] + [lay.cell(r, f.path) for f in lay.fields] + cells + [r.name])
        keys.append([None] + [number(lay.value(r, f.path)) for f in lay.fields] + mkeys + [None])
        ident = identity(r.results)
        csv_row = {"run": r.name, "label": labels[r.path], "status": r.status}
        csv_row.update({c: ident[c] for c, _, _ in IDENTITY})
        csv_row.update({path: lay.cell(r, path) for path in extra})
        for c in metric_cols:
            csv_row[c.key] = c.get(r)
            if c.key == "nll":
                csv_row["nll_k"] = lookup(r.results, "test.nll_k")
        csv_row["eval_wall_time_s"] = lookup(r.results, "eval_wall_time_s")
        csv_row["steps"] = lookup(r.results, "train.steps")
        csv_row["examples_per_s"] = lookup(r.results, "train.examples_per_s")
        csv_rows.append(csv_row)
    md_columns = [len(headers) - 1] + list(range(1, len(headers) - 1))
    return Table(headers, rows, numeric, detail, grouping, keys, md_columns, lay.common_line()), csv_rows


def group_key(run: RunRecord) -> str:
    """Runs with equal keys differ only by seed: the whole config minus the seed (else the summary)."""
    config = run.results.get("config")
    if isinstance(config, dict) and config:
        flat = {k: v for k, v in flatten(config).items() if k not in SEED_KEYS}
    else:
        flat = {k: v for k, v in identity(run.results).items() if k not in SEED_KEYS}
    return json.dumps(sorted((k, repr(v)) for k, v in flat.items()))


def seed_groups(runs: Sequence[RunRecord]) -> list[list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = {}
    for r in sorted(runs, key=sort_key):
        groups.setdefault(group_key(r), []).append(r)
    return list(groups.values())


def seeds_table(runs: Sequence[RunRecord]) -> tuple[Table, list[dict]] | None:
    """Mean ± std over seeds of each group of runs that differ only by seed (None: no group has 2+), in
    the sweep's order; the first column names the group by its grouping fields other than the seed."""
    lay = layout(runs)
    by_key: dict[str, list[RunRecord]] = {}
    for r in lay.order(runs):
        by_key.setdefault(group_key(r), []).append(r)
    groups = list(by_key.values())
    if not any(len(g) > 1 for g in groups):
        return None
    metric_cols = metric_columns(runs)
    fields = [f for f in lay.fields if f.path not in SEED_KEYS]
    labels = lay.labels([g[0] for g in groups], skip=tuple(SEED_KEYS), empty="all runs")
    others = other_fields(runs)
    headers = ["config"] + [f.header for f in fields] + ["seeds"] + [c.header for c in metric_cols]
    numeric = [False] + [f.numeric for f in fields] + [True] * (1 + len(metric_cols))
    detail = [False] + [f.companion for f in fields] + [False] + [not is_core(c) for c in metric_cols]
    grouping = [False] + [not f.companion for f in fields] + [False] * (1 + len(metric_cols))
    rows, keys, csv_rows = [], [], []
    for g in groups:
        ident = identity(g[0].results)
        row = [labels[g[0].path]] + [lay.cell(g[0], f.path) for f in fields] + [str(len(g))]
        key = [None] + [number(lay.value(g[0], f.path)) for f in fields] + [len(g)]
        csv_row = {"config": labels[g[0].path]}
        csv_row.update({c: ident[c] for c, _, _ in IDENTITY if c != "seed"})
        if others:
            csv_row["other"] = other_label(g[0], others)
        csv_row["seeds"] = " ".join(fmt_id(identity(r.results)["seed"]) for r in g)
        csv_row["n"] = len(g)
        for c in metric_cols:
            mean, std, n = mean_std([c.get(r) for r in g])
            cell = fmt_value(mean, c.decimals)
            if std is not None:
                cell += f" ± {fmt_value(std, max(c.decimals, 2))}"
            if cell and n != len(g):
                cell += f" (n={n})"
            row.append(cell)
            key.append(mean)
            csv_row[f"{c.key}_mean"] = mean
            csv_row[f"{c.key}_std"] = std
            csv_row[f"{c.key}_n"] = n
        rows.append(row)
        keys.append(key)
        csv_rows.append(csv_row)
    return Table(headers, rows, numeric, detail, grouping, keys, None, lay.common_line()), csv_rows


def problems_table(records: Sequence[RunRecord]) -> Table | None:
    bad = [r for r in records if not r.finished]
    if not bad:
        return None
    order = {"failed": 0, "unreadable results.json": 0, "preempted": 1, "running": 2, "not started": 3}
    rows = []
    for r in sorted(bad, key=lambda r: (order.get(r.status, 1), r.name)):
        rc = r.exit_code
        rows.append([r.name, r.status, "" if r.step is None else str(r.step), r.message[:200],
                     "" if rc is None else str(rc), r.log_path or ""])
    return Table(["run", "status", "step", "message", "exit code", "log"], rows,
                 [False, False, True, False, True, False])


def write_csv(path: str, rows: list[dict]) -> None:
    """rows as a CSV file: the columns in order of first appearance, None as a blank cell."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
