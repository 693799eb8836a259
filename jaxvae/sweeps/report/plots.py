"""The report's plots: test bound vs K (``plot_bound_vs_k``), training curves (``plot_curves``, from each
run's metrics.jsonl), NLL vs flow length, the AIS/BDMC sandwich and the inference gaps; the gradient-SNR
figures ``python -m jaxvae.diagnose`` left in run workdirs (``snr_figures``); and the pyplot set-up the
beta plots share (``pyplot``, ``color_cycle``).

Each ``plot_*(runs, path)`` draws into ``path`` and returns True, or returns False (no file) when the runs
lack what it draws. matplotlib is imported lazily, when a plot is drawn (it is slow to import and the
tables need none of it); the rest imports only the standard library and the report's loading and tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from jaxvae.sweeps.report.layout import flow_label
from jaxvae.sweeps.report.loading import RunRecord, fmt_id, identity, lookup, mean_std, number, sort_key
from jaxvae.sweeps.report.tables import other_fields, other_label, seed_groups

# ----------------------------------------------------------------------------------------------------
# Set-up and helpers
# ----------------------------------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only), imported when a plot is drawn."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # noqa: PLC0415
    return plt


def color_cycle(n: int):
    """n distinct line colours (tab10, tab20 beyond ten)."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


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
        parts.append(other_label(run, others))
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
                other_label(r, others) if others else "")

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
