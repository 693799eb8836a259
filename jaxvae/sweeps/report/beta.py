"""The report's plots for sweeps that vary ``objective.beta``: rate-distortion, disentanglement vs beta,
traversals; and the factor alignment tables.

Called by ``jaxvae.sweeps.report.build`` (its PLOTS list) on the finished runs; each plot returns False (no file)
unless the runs hold at least two betas and the numbers it draws.

- ``report_rate_distortion.png``: left, distortion D = -E log p(x|z) against rate R = E KL(q(z|x)||p(z))
  on the test set (Alemi et al. 2018), one point per beta and series (mean, seeds as error bars in both
  directions), each point on its own grey line R + D = const (equal ELBO, since R + D = -ELBO); the line
  through the ELBO-optimal point is drawn dark. Middle: the ELBO-surgery split of the rate,
  R = I_q(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016), against beta. Right (when results.json has
  ``test.sample_manifold_rmse``, i.e. on factors_toy): sample quality against distortion.
- ``report_disentanglement.png``: MIG, MIG per factor, and DCI disentanglement / informativeness vs beta.
- ``report_traversals.png``: each beta's latent traversals (the run with the lowest seed), one row per series.

A series is every config field but beta and the seed (e.g. the latent dimension).
``alignment_table`` and ``alignment_summary`` (``python -m jaxvae.sweeps.report RUNS_DIR --alignment``) give
the per-run factor alignment table and, per (latent_dim, beta), how often brightness and contrast sit on
separate latents (the write-up's claim (c)).

Imports only the standard library and the report's loading, tables and plots (matplotlib lazily, when a
plot is drawn).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from jaxvae.sweeps.report.loading import flatten, fmt_id, fmt_value, identity, lookup, mean_std, number, sort_key
from jaxvae.sweeps.report.plots import color_cycle, pyplot
from jaxvae.sweeps.report.tables import Table

BETA_PATH = "objective.beta"


def _beta(run) -> float | None:
    return number(identity(run.results)["beta"])


def varies_beta(runs: Sequence[Any]) -> bool:
    return len({_beta(r) for r in runs if _beta(r) is not None}) > 1


def series_key(run) -> str:
    """The run's config without beta, the seed and the name: runs of one series differ only in those."""
    flat = flatten(run.results.get("config") or {})
    drop = {BETA_PATH, "seed", "name"}
    return json.dumps(sorted((k, repr(v)) for k, v in flat.items() if k not in drop))


def series_label(runs: Sequence[Any], key: str) -> str:
    """The fields that tell this series from the others (``latent_dim=10``), or "all runs"."""
    flats = {series_key(r): flatten(r.results.get("config") or {}) for r in runs}
    if len(flats) < 2:
        return "all runs"
    fields = sorted({k for f in flats.values() for k in f}
                    - {BETA_PATH, "seed", "name"})
    differ = [k for k in fields if len({repr(f.get(k)) for f in flats.values()}) > 1]
    return " ".join(f"{k.rsplit('.', 1)[-1]}={flats[key].get(k)}" for k in differ) or "all runs"


def beta_series(runs: Sequence[Any], path: str) -> dict[str, dict[float, list[float]]]:
    """{series: {beta: [value of ``path`` in results.json, one per seed]}} (runs lacking it skipped)."""
    out: dict[str, dict[float, list[float]]] = {}
    for r in runs:
        v, b = number(lookup(r.results, path)), _beta(r)
        if v is not None and b is not None:
            out.setdefault(series_key(r), {}).setdefault(b, []).append(v)
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def rate_distortion_points(runs: Sequence[Any]) -> list[dict]:
    """One dict per (series, beta): rate and distortion mean and sample std over seeds, n, and
    ``neg_elbo`` = mean R + mean D; ``optimal`` marks each series' point of lowest R + D (highest ELBO)."""
    rates, dists = beta_series(runs, "test.rate"), beta_series(runs, "test.distortion")
    points = []
    for key, by_beta in rates.items():
        best = None
        for b, rs in by_beta.items():
            ds = dists.get(key, {}).get(b, [])
            if len(ds) != len(rs):
                continue
            (rm, rsd, n), (dm, dsd, _) = mean_std(rs), mean_std(ds)
            p = {"series": key, "beta": b, "rate": rm, "rate_std": rsd or 0.0, "distortion": dm,
                 "distortion_std": dsd or 0.0, "n": n, "neg_elbo": rm + dm, "optimal": False}
            points.append(p)
            if best is None or p["neg_elbo"] < best["neg_elbo"]:
                best = p
        if best is not None:
            best["optimal"] = True
    return points


def _beta_axis(ax, betas):
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator  # noqa: PLC0415
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(betas))))
    ax.xaxis.set_major_formatter(lambda x, pos: f"{x:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("β (KL weight)")
    ax.grid(True, alpha=0.3)


def _errorbar_vs_beta(ax, by_beta: dict[float, list[float]], **kw):
    bs = sorted(by_beta)
    stats = [mean_std(by_beta[b]) for b in bs]
    ax.errorbar(bs, [m for m, _, _ in stats], yerr=[sd or 0.0 for _, sd, _ in stats], capsize=3, ms=4, **kw)


def plot_rate_distortion(runs: Sequence[Any], path: str) -> bool:
    points = rate_distortion_points(runs)
    if not varies_beta(runs) or len({p["beta"] for p in points}) < 2:
        return False
    plt = pyplot()
    keys = sorted({p["series"] for p in points})
    colors = dict(zip(keys, color_cycle(len(keys))))
    quality = beta_series(runs, "test.sample_manifold_rmse")
    fig, axes = plt.subplots(1, 3 if quality else 2, figsize=(18 if quality else 12, 4.8))
    ax = axes[0]
    rs = [p["rate"] for p in points]
    lo, hi = min(rs), max(rs)
    pad = 0.1 * (hi - lo or 1.0)
    grid = [max(0.0, lo - pad), hi + pad]
    for p in points:  # the iso-ELBO line through each point: D = const - R
        ax.plot(grid, [p["neg_elbo"] - g for g in grid], color="0.15" if p["optimal"] else "0.8",
                lw=1.4 if p["optimal"] else 0.7, ls="-" if p["optimal"] else "--", zorder=1)
    for key in keys:
        ps = sorted((p for p in points if p["series"] == key), key=lambda p: p["beta"])
        n = max(p["n"] for p in ps)
        ax.errorbar([p["rate"] for p in ps], [p["distortion"] for p in ps],
                    xerr=[p["rate_std"] for p in ps], yerr=[p["distortion_std"] for p in ps], fmt="o-",
                    color=colors[key], ms=5, capsize=3, lw=1.2, zorder=3,
                    label=f"{series_label(runs, key)} (mean ± std, {n} seeds)")
        for p in ps:
            ax.annotate(f"β={p['beta']:g}" + (" (best ELBO)" if p["optimal"] else ""),
                        (p["rate"], p["distortion"]), textcoords="offset points", xytext=(5, 4), fontsize=7,
                        color=colors[key])
    ax.set_xlim(*grid)
    ds = [p["distortion"] for p in points]
    dpad = 0.1 * (max(ds) - min(ds) or 1.0)
    ax.set_ylim(min(ds) - dpad, max(ds) + dpad)
    ax.set_xlabel("rate R = E KL(q(z|x) || p(z))  (nats)")
    ax.set_ylabel("distortion D = −E log p(x|z)  (nats)")
    ax.set_title("test rate–distortion; lines: R + D = −ELBO = const\n(dark: the highest-ELBO point of each series)",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    mi, mkl = beta_series(runs, "test.mutual_information"), beta_series(runs, "test.marginal_kl")
    rate = beta_series(runs, "test.rate")
    betas = [b for k in keys for b in rate.get(k, {})]
    for key in keys:
        c = colors[key]
        lab = series_label(runs, key)
        _errorbar_vs_beta(ax, rate.get(key, {}), fmt="o:", color=c, lw=1.0, label=f"{lab}: rate R")
        if mi.get(key):
            _errorbar_vs_beta(ax, mi[key], fmt="s-", color=c, lw=1.4, label=f"{lab}: I_q(x; z)")
        if mkl.get(key):
            _errorbar_vs_beta(ax, mkl[key], fmt="^--", color=c, lw=1.0, label=f"{lab}: KL(q(z) || p(z))")
    _beta_axis(ax, betas)
    ax.set_ylabel("nats")
    ax.set_title("ELBO surgery: R = I_q(x; z) + KL(q(z) || p(z))", fontsize=9)
    ax.legend(fontsize=7)
    if quality:
        _plot_sample_quality(axes[2], runs, points, quality, keys, colors)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _plot_sample_quality(ax, runs, points, quality, keys, colors):
    """Distortion (reconstruction) against the prior samples' distance to the data manifold, per beta."""
    for key in keys:
        ps = sorted((p for p in points if p["series"] == key and p["beta"] in quality.get(key, {})),
                    key=lambda p: p["beta"])
        stats = [mean_std(quality[key][p["beta"]]) for p in ps]
        ax.errorbar([p["distortion"] for p in ps], [m for m, _, _ in stats],
                    xerr=[p["distortion_std"] for p in ps], yerr=[sd or 0.0 for _, sd, _ in stats], fmt="o-",
                    color=colors[key], ms=5, capsize=3, lw=1.2, label=series_label(runs, key))
        for p, (m, _, _) in zip(ps, stats):
            ax.annotate(f"β={p['beta']:g}", (p["distortion"], m), textcoords="offset points", xytext=(5, 4),
                        fontsize=7, color=colors[key])
    ax.set_xlabel("distortion D = −E log p(x|z)  (nats; lower = better reconstructions)")
    ax.set_ylabel("prior samples' RMS distance to the data manifold\n(pixels; lower = better samples)")
    ax.set_title("sample quality vs reconstruction (factors_toy: the manifold is known)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def factor_names(runs: Sequence[Any]) -> list[str]:
    names: list[str] = []
    for r in runs:
        for n in (lookup(r.results, "test.disentanglement.mig_per_factor") or {}):
            if n not in names:
                names.append(n)
    return names


def plot_disentanglement_vs_beta(runs: Sequence[Any], path: str) -> bool:
    mig = beta_series(runs, "test.disentanglement.mig")
    if not varies_beta(runs) or not mig:
        return False
    plt = pyplot()
    keys = sorted(mig)
    colors = dict(zip(keys, color_cycle(len(keys))))
    names = factor_names(runs)
    styles = ["o-", "s--", "^:", "d-.", "v-", "x--"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    betas = [b for k in keys for b in mig[k]]
    for key in keys:
        lab = series_label(runs, key)
        _errorbar_vs_beta(axes[0], mig[key], fmt="o-", color=colors[key], lw=1.4, label=lab)
        for name, style in zip(names, styles):
            per = beta_series(runs, f"test.disentanglement.mig_per_factor.{name}")
            if per.get(key):
                _errorbar_vs_beta(axes[1], per[key], fmt=style, color=colors[key], lw=1.2, label=f"{lab}: {name}")
        for metric, style in (("dci_disentanglement", "o-"), ("dci_completeness", "s--"),
                              ("dci_informativeness", "^:")):
            vals = beta_series(runs, f"test.disentanglement.{metric}")
            if vals.get(key):
                _errorbar_vs_beta(axes[2], vals[key], fmt=style, color=colors[key], lw=1.2,
                                  label=f"{lab}: {metric[4:]}")
    axes[0].set_title("MIG (20-bin discretised encoder means; mean ± std over seeds)", fontsize=9)
    axes[1].set_title("MIG per factor: (I(z_j*; v) − 2nd largest I(z_j; v)) / H(v)", fontsize=9)
    axes[2].set_title("DCI (linear ridge importances): disentanglement, completeness,\n"
                      "informativeness (held-out R²)", fontsize=9)
    for ax in axes:
        _beta_axis(ax, betas)
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_traversals(runs: Sequence[Any], path: str) -> bool:
    """Each (series, beta)'s traversals.png (lowest seed) in one grid: rows = series, columns = beta."""
    if not varies_beta(runs):
        return False
    cells: dict[tuple[str, float], tuple[Any, str]] = {}
    for r in runs:
        png = os.path.join(r.path, "traversals.png")
        b = _beta(r)
        if b is None or not os.path.exists(png):
            continue
        seed = number(identity(r.results)["seed"]) or 0.0
        key = (series_key(r), b)
        if key not in cells or seed < cells[key][0]:
            cells[key] = (seed, png)
    if not cells:
        return False
    import matplotlib.image as mpimg  # noqa: PLC0415
    plt = pyplot()
    keys = sorted({k for k, _ in cells})
    betas = sorted({b for _, b in cells})
    fig, axes = plt.subplots(len(keys), len(betas), figsize=(3.4 * len(betas), 3.6 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        for j, b in enumerate(betas):
            ax = axes[i][j]
            ax.axis("off")
            if (key, b) in cells:
                seed, png = cells[(key, b)]
                ax.imshow(mpimg.imread(png))
                ax.set_title(f"β={b:g} {series_label(runs, key)} seed={seed:g}", fontsize=7)
    fig.suptitle("latent traversals (rows: the most active latents; columns within an image: −3 … 3)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return True


def alignment_table(runs: Sequence[Any]) -> str:
    """Markdown: per run, beta, the latent with the largest MI with each factor and that factor's MIG."""
    names = factor_names(runs)
    rows = []
    for r in sorted(runs, key=sort_key):
        d = lookup(r.results, "test.disentanglement")
        if not isinstance(d, dict):
            continue
        ident = identity(r.results)
        cells = [r.name, fmt_id(ident["beta"]), fmt_id(ident["latent_dim"]), fmt_id(ident["seed"]),
                 fmt_value(lookup(r.results, "test.active_units"), 0)]
        for n in names:
            cells.append(f"z{d['mig_latent'].get(n)} ({d['mig_per_factor'].get(n, math.nan):.2f})")
        cells.append(f"{d['mig']:.3f}")
        rows.append(cells)
    headers = ["run", "beta", "latent_dim", "seed", "active units"] + [f"{n}: latent (MIG)" for n in names] + ["MIG"]
    return Table(headers, rows, [False, True, True, True, True] + [False] * len(names) + [True]).markdown()


def alignment_summary(runs: Sequence[Any], first: str = "brightness", second: str = "contrast",
                      threshold: float = 0.3) -> str:
    """Markdown: per (latent_dim, beta), in how many seeds ``first`` and ``second`` have different top
    latents with a per-factor MIG above ``threshold`` each, and their mean per-factor MIGs."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        d = lookup(r.results, "test.disentanglement")
        if not isinstance(d, dict) or first not in d.get("mig_latent", {}):
            continue
        ident = identity(r.results)
        groups.setdefault((number(ident["latent_dim"]) or 0, _beta(r) or 0), []).append(d)
    rows = []
    for (dim, beta), ds in sorted(groups.items()):
        ok = sum(d["mig_latent"][first] != d["mig_latent"][second] and d["mig_per_factor"][first] > threshold
                 and d["mig_per_factor"][second] > threshold for d in ds)
        m1, s1, _ = mean_std([d["mig_per_factor"][first] for d in ds])
        m2, s2, _ = mean_std([d["mig_per_factor"][second] for d in ds])
        rows.append([f"{dim:g}", f"{beta:g}", f"{ok}/{len(ds)}", f"{m1:.2f} ± {s1 or 0:.2f}",
                     f"{m2:.2f} ± {s2 or 0:.2f}"])
    return Table(["latent_dim", "beta", f"separate latents, both MIG > {threshold}", f"MIG {first}",
                  f"MIG {second}"], rows, [True, True, True, True, True]).markdown()
