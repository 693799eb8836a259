"""Compare the runs of a sweep: tables (markdown, CSV, HTML) and plots of bounds vs K and training curves.

    python -m jaxvae.sweeps.report runs/iwae_mnist

reads every ``results.json`` under the folder (recursively), prints a markdown table and writes, in that
folder: ``report.md``, ``report.csv`` (one row per run, raw numbers), ``report_seeds.csv`` (mean and std
over seeds, when some configs have several seeds), ``report_bound_vs_k.png``, ``report_curves.png``,
``report_nll_vs_flow_length.png`` (only when runs differ in flow length) and ``report.html`` (everything,
the pictures embedded). Unfinished runs (``status.json`` running/preempted, no ``results.json``), failed runs
and planned runs that never started (from ``sweep.json``) are listed in their own section.

Missing numbers (absent keys, ``null``) are blank cells. Standard deviations over seeds are sample
standard deviations (n - 1 in the denominator).
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import html
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from jaxvae.sweeps import beta_report, paper_tables
from jaxvae.sweeps.report_common import (IDENTITY, RunRecord, Table, color_cycle, flatten, fmt_id, fmt_value,
                                         identity, load_runs, lookup, mean_std, number, pyplot, sort_key)

SEED_KEYS = {"seed"}


# ----------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------


# Config fields the identity columns already show (not repeated in the "other" column).
SHOWN_CONFIG = {"seed", "name", "data.name", "objective.name", "objective.k", "model.flow",
                "model.flow_length", "objective.beta", "model.latent_dim"}


def flow_label(flow: Any, length: Any) -> str:
    """``planar×8`` (kind x length); ``none`` without a flow."""
    if flow in (None, "", "none"):
        return "none"
    return f"{flow}×{length}" if length is not None else str(flow)


def iwae_bounds(results: dict) -> dict[int, float]:
    """{K: IWAE_K} of the test set; IWAE_1 falls back to the test ELBO."""
    out = {}
    for k, v in (lookup(results, "test.iwae") or {}).items():
        try:
            kk = int(k)
        except (TypeError, ValueError):
            continue
        if number(v) is not None:
            out[kk] = float(v)
    if 1 not in out and number(lookup(results, "test.elbo")) is not None:
        out[1] = float(lookup(results, "test.elbo"))
    return dict(sorted(out.items()))


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


def snr_figures(runs: Sequence[RunRecord], out_dir: str) -> list[tuple[str, str]]:
    """The gradient-SNR figures ``python -m jaxvae.diagnose`` wrote into run workdirs (snr_<checkpoint>.png),
    as (path relative to out_dir, title)."""
    made = []
    for r in runs:
        for ckpt in ("init", "best", "latest"):
            png = os.path.join(r.path, f"snr_{ckpt}.png")
            if os.path.exists(png):
                made.append((os.path.relpath(png, out_dir), f"Gradient SNR vs K: {r.name} ({ckpt})"))
    return made


def other_fields(runs: Sequence[RunRecord]) -> list[str]:
    """Config fields (beyond the identity columns) whose values differ between runs."""
    flats = [flatten(r.results.get("config") or {}) for r in runs]
    keys = sorted({k for f in flats for k in f} - SHOWN_CONFIG)
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _other_label(run: RunRecord, fields: Sequence[str]) -> str:
    flat = flatten(run.results.get("config") or {})
    labels = {}
    for f in fields:
        short = f.rsplit(".", 1)[-1]
        labels[f] = f if sum(g.rsplit(".", 1)[-1] == short for g in fields) > 1 else short
    return " ".join(f"{labels[f]}={fmt_id(flat.get(f))}" for f in fields)


# ----------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------


def _varies(runs, col) -> bool:
    return len({repr(identity(r.results)[col]) for r in runs}) > 1


def _id_columns(runs) -> list[str]:
    cols = []
    for col in ("dataset", "objective", "k", "flow", "beta", "latent_dim", "seed"):
        if col in ("dataset", "latent_dim") and not _varies(runs, col):
            continue
        cols.append(col)
    return cols


def _id_cell(ident: dict, col: str) -> str:
    if col == "flow":
        return flow_label(ident["flow"], ident["flow_length"])
    return fmt_id(ident[col])


def runs_table(runs: Sequence[RunRecord]) -> tuple[Table, list[dict]]:
    """The per-run markdown table and the CSV rows (raw values)."""
    metric_cols = metric_columns(runs)
    id_cols = _id_columns(runs)
    nll_in_cell = not any(c.header.startswith("NLL (K=") for c in metric_cols)
    headers = ["run"] + id_cols + [c.header for c in metric_cols]
    numeric = [False] + [c in ("k", "beta", "latent_dim", "seed") for c in id_cols] + [True] * len(metric_cols)
    rows, csv_rows = [], []
    for r in sorted(runs, key=sort_key):
        ident = identity(r.results)
        row = [r.name] + [_id_cell(ident, c) for c in id_cols]
        for c in metric_cols:
            cell = fmt_value(c.get(r), c.decimals)
            if c.key == "nll" and nll_in_cell and cell and lookup(r.results, "test.nll_k") is not None:
                cell += f" (K={lookup(r.results, 'test.nll_k')})"
            row.append(cell)
        rows.append(row)
        csv_row = {"run": r.name, "status": r.status}
        csv_row.update({c: ident[c] for c, _, _ in IDENTITY})
        for c in metric_cols:
            csv_row[c.key] = c.get(r)
            if c.key == "nll":
                csv_row["nll_k"] = lookup(r.results, "test.nll_k")
        csv_row["eval_wall_time_s"] = lookup(r.results, "eval_wall_time_s")
        csv_row["steps"] = lookup(r.results, "train.steps")
        csv_row["examples_per_s"] = lookup(r.results, "train.examples_per_s")
        csv_rows.append(csv_row)
    return Table(headers, rows, numeric), csv_rows


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
    """Mean ± std over seeds of each group of runs that differ only by seed (None: no group has 2+)."""
    groups = seed_groups(runs)
    if not any(len(g) > 1 for g in groups):
        return None
    metric_cols = metric_columns(runs)
    id_cols = [c for c in _id_columns(runs) if c != "seed"]
    others = other_fields(runs)
    headers = id_cols + (["other"] if others else []) + ["seeds"] + [c.header for c in metric_cols]
    numeric = ([c in ("k", "beta", "latent_dim") for c in id_cols] + ([False] if others else []) + [True]
               + [True] * len(metric_cols))
    rows, csv_rows = [], []
    for g in groups:
        ident = identity(g[0].results)
        row = [_id_cell(ident, c) for c in id_cols]
        if others:
            row.append(_other_label(g[0], others))
        row.append(str(len(g)))
        csv_row = {c: ident[c] for c, _, _ in IDENTITY if c != "seed"}
        if others:
            csv_row["other"] = _other_label(g[0], others)
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
            csv_row[f"{c.key}_mean"] = mean
            csv_row[f"{c.key}_std"] = std
            csv_row[f"{c.key}_n"] = n
        rows.append(row)
        csv_rows.append(csv_row)
    return Table(headers, rows, numeric), csv_rows


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


def _write_csv(path: str, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ----------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------


def _group_label(run: RunRecord, others: Sequence[str]) -> str:
    ident = identity(run.results)
    parts = [str(ident["objective"] or "?")]
    if ident["k"] is not None:
        parts.append(f"K={ident['k']}")
    flow = flow_label(ident["flow"], ident["flow_length"])
    if flow != "none":
        parts.append(flow)
    if number(ident["beta"]) not in (None, 1.0):
        parts.append(f"β={fmt_id(ident['beta'])}")
    if others:
        parts.append(_other_label(run, others))
    return " ".join(parts)


def _legend(fig, axes, n_entries):
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        return
    ncol = 1 if n_entries <= 12 else 2
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, ncol=ncol,
               frameon=False)


def _log_k_axis(ax, ks):
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: PLC0415
    ax.set_xscale("log")
    ks = sorted(set(ks))
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(lambda x, pos: f"{x:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if len(ks) == 1:
        ax.set_xlim(ks[0] / 2, ks[0] * 2)


def plot_bound_vs_k(runs: Sequence[RunRecord], path: str) -> bool:
    """Left: test IWAE_K vs K (log x; K=1 is the ELBO), one line per model (mean ± std over seeds when
    a config has several); dashed: exact log p(x) when known. Right: the gap to the best estimate of
    log p(x) (the exact value when known, else the run's largest K)."""
    runs = [r for r in runs if iwae_bounds(r.results)]
    if not runs:
        return False
    plt = pyplot()
    groups = seed_groups(runs)
    others = other_fields(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    any_exact, all_ks, all_gaps = False, set(), []
    for color, g in zip(color_cycle(len(groups)), groups):
        bounds = [iwae_bounds(r.results) for r in g]
        exacts = [number(lookup(r.results, "test.exact_log_px")) for r in g]
        gaps = []
        for b, exact in zip(bounds, exacts):
            ref = exact if exact is not None else b[max(b)]
            gaps.append({k: ref - v for k, v in b.items() if exact is not None or k != max(b)})
        ks = sorted({k for b in bounds for k in b})
        all_ks.update(ks)
        stats = [mean_std([b.get(k) for b in bounds]) for k in ks]
        label = _group_label(g[0], others) + (f" (mean ± std, {len(g)} seeds)" if len(g) > 1 else "")
        axes[0].errorbar(ks, [m for m, _, _ in stats], yerr=[sd or 0.0 for _, sd, _ in stats], fmt="o-",
                         color=color, lw=1.5, ms=4, capsize=3, label=label)
        known = [e for e in exacts if e is not None]
        if known:
            any_exact = True
            axes[0].axhline(sum(known) / len(known), color=color, ls="--", lw=1, alpha=0.7)
        gks = sorted({k for gp in gaps for k in gp})
        if gks:
            gstats = [mean_std([gp.get(k) for gp in gaps]) for k in gks]
            axes[1].errorbar(gks, [m for m, _, _ in gstats], yerr=[sd or 0.0 for _, sd, _ in gstats],
                             fmt="o-", color=color, lw=1.5, ms=4, capsize=3)
            all_gaps += [m for m, _, _ in gstats]
    for ax in axes:
        _log_k_axis(ax, all_ks)
        ax.set_xlabel("K (importance samples; K=1 is the ELBO)")
        ax.grid(True, which="major", alpha=0.3)
    axes[1].set_xlim(axes[0].get_xlim())
    if all_gaps and min(all_gaps) > 0 and max(all_gaps) / min(all_gaps) > 20:
        axes[1].set_yscale("log")
    axes[0].set_ylabel("test IWAE_K bound (nats, higher is tighter)")
    axes[0].set_title("test bound vs K" + (" (dashed: exact log p(x))" if any_exact else ""))
    axes[1].set_ylabel("gap (nats)")
    axes[1].set_title("exact log p(x) − IWAE_K" if any_exact else "IWAE_Kmax − IWAE_K (looseness)")
    fig.tight_layout()
    _legend(fig, axes, len(groups))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def read_curves(run: RunRecord) -> list[dict]:
    name = (run.results or {}).get("curves") or "metrics.jsonl"
    path = os.path.join(run.path, name)
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
    except OSError:
        pass
    return out


def _xy(lines, key):
    pts = [(number(l.get("step")), number(l.get(key))) for l in lines]
    pts = sorted((x, y) for x, y in pts if x is not None and y is not None)
    return [p[0] for p in pts], [p[1] for p in pts]


def _robust_ylim(ax, values):
    if len(values) < 5:
        return
    vs = sorted(values)
    lo, hi = vs[int(0.05 * (len(vs) - 1))], vs[-1]
    if hi > lo:
        pad = 0.08 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)


def plot_curves(runs: Sequence[RunRecord], path: str) -> bool:
    """Training bound (train lines' elbo/iwae) and validation bounds (iwae_K) vs step, per run."""
    curves = [(r, read_curves(r)) for r in runs]
    curves = [(r, c) for r, c in curves if c]
    if not curves:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups = seed_groups([r for r, _ in curves])
    others = other_fields([r for r, _ in curves])
    colors, labels = {}, {}
    for color, g in zip(color_cycle(len(groups)), groups):
        for j, r in enumerate(g):
            colors[r.name] = color
            if j == 0:
                labels[r.name] = _group_label(r, others) + (f" ({len(g)} seeds)" if len(g) > 1 else "")
    train_vals, valid_vals, valid_keys = [], [], set()
    for r, lines in sorted(curves, key=lambda rc: sort_key(rc[0])):
        train = [l for l in lines if l.get("split", "train") == "train"]
        valid = [l for l in lines if l.get("split") == "valid"]
        key = "iwae" if any("iwae" in l for l in train) else "elbo"
        x, y = _xy(train, key)
        if x:
            label = labels.get(r.name)
            axes[0].plot(x, y, "-" if len(x) > 30 else "o-", color=colors[r.name], lw=1.2, ms=3, alpha=0.85,
                         label=None if label is None else f"{label}: train {key}")
            train_vals += y
        vkeys = sorted({k for l in valid for k in l if k.startswith("iwae_") or k == "elbo"})
        for vk in vkeys:
            x, y = _xy(valid, vk)
            if x:
                valid_keys.add(vk)
                axes[1].plot(x, y, "o-", color=colors[r.name], lw=1.2, ms=3, alpha=0.85)
                valid_vals += y
    if not valid_vals:
        axes[1].text(0.5, 0.5, "no validation entries in metrics.jsonl", ha="center", va="center",
                     transform=axes[1].transAxes, color="gray")
    axes[0].set_title("training bound (train batches)")
    axes[1].set_title("validation bound" + (f" ({', '.join(sorted(valid_keys))})" if valid_keys else ""))
    _robust_ylim(axes[0], train_vals)
    _robust_ylim(axes[1], valid_vals)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("bound (nats)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _legend(fig, axes, len(groups))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_nll_vs_flow_length(runs: Sequence[RunRecord], path: str) -> bool:
    """NLL vs flow length, one line per flow kind and everything else (mean ± std over seeds); runs
    without a flow are the length-0 point of every line with the same objective, K and beta."""
    runs = [r for r in runs if number(lookup(r.results, "test.nll")) is not None]
    lengths = {identity(r.results)["flow_length"] or 0 for r in runs}
    if len(lengths) < 2:
        return False
    plt = pyplot()
    others = other_fields(runs)

    def base(r):
        i = identity(r.results)
        return (str(i["dataset"]), str(i["objective"]), str(i["k"]), str(i["beta"]), str(i["latent_dim"]),
                _other_label(r, others) if others else "")

    lines: dict[tuple, dict[int, list[float]]] = {}
    baselines: dict[tuple, list[float]] = {}
    for r in runs:
        i = identity(r.results)
        length = int(i["flow_length"] or 0)
        nll = float(lookup(r.results, "test.nll"))
        if i["flow"] in (None, "", "none") or length == 0:
            baselines.setdefault(base(r), []).append(nll)
        else:
            lines.setdefault(base(r) + (str(i["flow"]),), {}).setdefault(length, []).append(nll)
    for key, vals in baselines.items():
        kinds = [k for k in lines if k[:-1] == key]
        for k in kinds:
            lines[k].setdefault(0, []).extend(vals)
        if not kinds:
            lines[key + ("none",)] = {0: vals}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for color, (key, pts) in zip(color_cycle(len(lines)), sorted(lines.items())):
        xs = sorted(pts)
        stats = [mean_std(pts[x]) for x in xs]
        ys = [s[0] for s in stats]
        es = [s[1] or 0.0 for s in stats]
        label = f"{key[1]} K={key[2]} {key[-1]}" + (f" β={key[3]}" if key[3] not in ("1.0", "1", "None") else "")
        if key[5]:
            label += " " + key[5]
        ax.errorbar(xs, ys, yerr=es, fmt="o-", color=color, capsize=3, label=label)
    ax.set_xlabel("flow length (0 = no flow)")
    ax.set_ylabel("test NLL (nats, lower is better)")
    ax.set_title("NLL vs flow length (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_sandwich(runs: Sequence[RunRecord], path: str) -> bool:
    """One panel per run with ``test.ais`` or ``test.bdmc`` (eval.ais / eval.bdmc): the test IWAE_K
    ladder vs K, the AIS estimate of log p(x) (line, ± 2 standard errors over its examples; the IWAE_K of
    those same examples is marked), and the BDMC sandwich [lower, upper] of the simulated examples
    (shaded, with their IWAE_K marked)."""
    runs = [r for r in runs if lookup(r.results, "test.ais") or lookup(r.results, "test.bdmc")]
    if not runs:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 5.2), squeeze=False)
    others = other_fields(runs)
    for ax, run in zip(axes[0], runs):
        b = iwae_bounds(run.results)
        ks = sorted(b)
        if ks:
            ax.plot(ks, [b[k] for k in ks], "o-", color="C0", label="test IWAE_K (all test examples)")
        a = lookup(run.results, "test.ais") or {}
        if a:
            m, se = a["log_px"], a.get("log_px_stderr") or 0.0
            ax.axhline(m, color="C3", lw=1.5, label=f"AIS T={a['num_steps']}, {a['chains']} chains "
                                                     f"({a['examples']} test ex.)")
            ax.axhspan(m - 2 * se, m + 2 * se, color="C3", alpha=0.15)
            ax.plot([a["iwae_k"]], [a["iwae"]], "s", color="C3", mfc="none",
                    label=f"IWAE_{a['iwae_k']} on the AIS examples")
            ks.append(a["iwae_k"])
        bd = lookup(run.results, "test.bdmc") or {}
        if bd:
            ax.axhspan(bd["lower"], bd["upper"], color="C2", alpha=0.3,
                       label=f"BDMC [{bd['lower']:.2f}, {bd['upper']:.2f}] ({bd['examples']} simulated ex.)")
            ax.plot([bd["iwae_k"]], [bd["iwae"]], "D", color="C2", label=f"IWAE_{bd['iwae_k']} on the simulated ex.")
            ks.append(bd["iwae_k"])
        if ks:
            _log_k_axis(ax, ks)
        ax.set_xlabel("K (importance samples)")
        ax.set_ylabel("log p(x) estimate (nats)")
        ax.set_title(_group_label(run, others), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_gaps(runs: Sequence[RunRecord], path: str) -> bool:
    """The inference gap log p(x) - ELBO[q_phi] of each run with ``test.gaps`` (eval.gaps), as a stacked bar:
    approximation gap (log p(x) - ELBO[q*]) below, amortization gap (ELBO[q*] - ELBO[q_phi]) above
    (Cremer, Li & Duvenaud 2018); error bars: 2 standard errors over the examples."""
    runs = [r for r in runs if lookup(r.results, "test.gaps")]
    if not runs:
        return False
    plt = pyplot()
    others = other_fields(runs)
    gs = [lookup(r.results, "test.gaps") for r in runs]
    xs = list(range(len(runs)))
    approx = [g["approximation_gap"] for g in gs]
    amort = [g["amortization_gap"] for g in gs]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(runs) + 2), 4.2))
    ax.bar(xs, approx, color="C0", label="approximation gap", yerr=[2 * (g.get("approximation_gap_stderr") or 0)
                                                                     for g in gs], capsize=3)
    ax.bar(xs, amort, bottom=approx, color="C1", label="amortization gap",
           yerr=[2 * (g.get("amortization_gap_stderr") or 0) for g in gs], capsize=3)
    ax.set_xticks(xs)
    ax.set_xticklabels([_group_label(r, others) + f"\n({g['examples']} ex., log p: {g['log_px_estimator']})"
                        for r, g in zip(runs, gs)], fontsize=7)
    ax.set_ylabel("nats")
    ax.set_title("log p(x) − ELBO[q_φ] = approximation + amortization gap")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


PLOTS = [
    ("report_bound_vs_k.png", "Test bound vs K", plot_bound_vs_k),
    ("report_curves.png", "Training curves", plot_curves),
    ("report_nll_vs_flow_length.png", "NLL vs flow length", plot_nll_vs_flow_length),
    ("report_sandwich.png", "log p(x): IWAE_K, AIS and the BDMC sandwich", plot_sandwich),
    ("report_gaps.png", "Inference gaps (approximation + amortization)", plot_gaps),
    # sweeps over objective.beta (jaxvae.sweeps.beta_report)
    ("report_rate_distortion.png", "Rate–distortion over beta", beta_report.plot_rate_distortion),
    ("report_disentanglement.png", "Disentanglement vs beta", beta_report.plot_disentanglement_vs_beta),
    ("report_traversals.png", "Latent traversals by beta", beta_report.plot_traversals),
]


# ----------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    root: str
    records: list[RunRecord]
    runs: Table | None
    runs_csv: list[dict]
    seeds: Table | None
    seeds_csv: list[dict]
    problems: Table | None
    plots: list[tuple[str, str]]  # (file name, title)
    papers: list = dataclasses.field(default_factory=list)  # jaxvae.sweeps.paper_tables sections

    def markdown(self) -> str:
        finished = [r for r in self.records if r.finished]
        out = [f"# Report: {self.root}", "",
               f"{len(finished)} finished run(s), {len(self.records) - len(finished)} unfinished or failed."]
        if self.runs is not None:
            out += ["", "## Runs", "", self.runs.markdown()]
        if self.seeds is not None:
            out += ["", "## Mean ± std over seeds", "",
                    "Runs whose configs differ only by seed; sample standard deviation (n − 1).", "",
                    self.seeds.markdown()]
        if self.papers:
            out += ["", paper_tables.markdown(self.papers).rstrip()]
        if self.problems is not None:
            out += ["", "## Unfinished and failed runs", "", self.problems.markdown()]
        if self.plots:
            out += ["", "## Plots", ""] + [f"![{title}]({name})" for name, title in self.plots]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        finished = sum(r.finished for r in self.records)
        parts = [f"<h1>Report: {html.escape(self.root)}</h1>",
                 f"<p>{finished} finished run(s), {len(self.records) - finished} unfinished or failed.</p>"]
        if self.runs is not None:
            parts += ["<h2>Runs</h2>", self.runs.html()]
        if self.seeds is not None:
            parts += ["<h2>Mean ± std over seeds</h2>",
                      "<p>Runs whose configs differ only by seed; sample standard deviation (n − 1).</p>",
                      self.seeds.html()]
        for sec in self.papers:
            parts += [f"<h2>{html.escape(sec['title'])}</h2>", f"<p>{html.escape(sec['note'])}</p>"]
            parts += [Table(list(h), [list(r) for r in rows], list(n)).html() for _, h, rows, n in sec["tables"]]
        if self.problems is not None:
            parts += ["<h2>Unfinished and failed runs</h2>", self.problems.html()]
        for name, title in self.plots:
            with open(os.path.join(self.root, name), "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            parts += [f"<h2>{html.escape(title)}</h2>",
                      f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">']
        style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:100%}"
                 "table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}"
                 "th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f3f3f3}"
                 "td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>Report: {html.escape(self.root)}</title><style>{style}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")


def build_report(root: str, plots: bool = True, out_dir: str | None = None) -> Report:
    out_dir = out_dir or root
    records = load_runs(root)
    finished = [r for r in records if r.finished]
    runs, runs_csv = runs_table(finished) if finished else (None, [])
    seeds = seeds_table(finished) if finished else None
    seeds_tab, seeds_csv = seeds if seeds is not None else (None, [])
    made = []
    if plots and finished:
        os.makedirs(out_dir, exist_ok=True)
        for name, title, fn in PLOTS:
            path = os.path.join(out_dir, name)
            if fn(finished, path):
                made.append((name, title))
            elif os.path.exists(path):
                os.remove(path)  # stale picture of an earlier report
        made += snr_figures(finished, out_dir)
    papers = paper_tables.paper_tables([r.results for r in finished])  # published values beside ours (papers/*.json)
    return Report(out_dir, records, runs, runs_csv, seeds_tab, seeds_csv, problems_table(records), made, papers)


def write_report(root: str, plots: bool = True, out_dir: str | None = None, verbose: bool = True) -> str:
    """Build the report of every run under root, write its files (into out_dir, default root) and
    return the markdown."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no folder {root!r}")
    rep = build_report(root, plots=plots, out_dir=out_dir)
    out = out_dir or root
    os.makedirs(out, exist_ok=True)
    text = rep.markdown()
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    _write_csv(os.path.join(out, "report.csv"), rep.runs_csv)
    seeds_csv = os.path.join(out, "report_seeds.csv")
    if rep.seeds_csv:
        _write_csv(seeds_csv, rep.seeds_csv)
    elif os.path.exists(seeds_csv):
        os.remove(seeds_csv)
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write(rep.html())
    if verbose:
        files = ["report.md", "report.csv"] + (["report_seeds.csv"] if rep.seeds_csv else [])
        files += [n for n, _ in rep.plots] + ["report.html"]
        print(f"wrote {', '.join(os.path.join(out, f) for f in files)}", file=sys.stderr)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxvae.sweeps.report", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder holding run workdirs (searched recursively), e.g. runs/iwae_mnist")
    p.add_argument("--out", default=None, help="where to write report.* (default: ROOT)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--quiet", action="store_true", help="don't print the markdown")
    args = p.parse_args(argv)
    try:
        text = write_report(args.root, plots=not args.no_plots, out_dir=args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
