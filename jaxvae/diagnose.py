"""Gradient signal-to-noise ratio of a run's model, per estimator and number of samples K.

    python -m jaxvae.diagnose WORKDIR --ks 1,4,16,64,256 --estimators iwae,iwae_dreg,miwae,piwae,ciwae,rws
    python -m jaxvae.diagnose WORKDIR --checkpoint init      # the run's freshly initialised parameters

For each estimator and K: R = ``--draws`` gradients on one fixed batch of ``--batch`` test examples (only the
sampling key changes), per parameter SNR = |mean g| / std g, summarised per network (encoder, decoder) as
in Rainforth et al. 2018 (jaxvae.vae.diagnostics.snr_vs_k). K is the number of draws per example; MIWAE and
PIWAE spend it as M = min(--m, K) groups of K // M. Writes WORKDIR/snr_<checkpoint>.json and a log-log
figure WORKDIR/snr_<checkpoint>.png (SNR vs K, encoder and decoder panels, one line per estimator); the
report (python -m jaxvae.sweeps.report) shows the figures of the runs that have them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxvae.vae import diagnostics

ESTIMATORS = ("iwae", "iwae_dreg", "miwae", "piwae", "ciwae", "rws")
PLOTTED = "snr_debiased_mean"  # the mean over parameters of the debiased per-parameter SNR


def run_params(run, checkpoint: str):
    """The parameters to diagnose: a checkpoint's ("best", "latest"), or "init": the run's own initial
    parameters (its seed and decoder output bias), as step 0 of training had them."""
    if checkpoint != "init":
        return run.params
    from jaxvae.experiment import train as train_lib
    from jaxvae.experiment.building import output_bias

    bias = output_bias(run.config, run.model, run.dataset.train)
    return train_lib.create_train_state(run.model, _no_optimizer(), run.config.seed, bias).params


def _no_optimizer():
    import optax

    return optax.identity()


def diagnose(model, params, x, key, *, ks: Sequence[int], estimators: Sequence[str], num_draws: int = 100,
             m: int = 4, beta_ciwae: float = 0.5, chunk: int | None = 4) -> dict:
    """The SNR table (``diagnostics.snr_vs_k``) with its settings: a pure function of (model, params, x, key)."""
    t0 = time.time()
    table = diagnostics.snr_vs_k(model, params, x, key, tuple(ks), tuple(estimators), num_draws, m, beta_ciwae,
                                 chunk)
    return {"ks": [int(k) for k in ks], "estimators": list(estimators), "num_draws": int(num_draws),
            "batch_size": int(x.shape[0]), "m": int(m), "beta_ciwae": float(beta_ciwae), "snr": table,
            "seconds": time.time() - t0}


def plot_snr(result: dict, path: str | Path, title: str = "") -> None:
    """Log-log SNR vs K, one panel per network, one line per estimator; dashed guides of slope -1/2 and +1/2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, group in zip(axes, ("encoder", "decoder")):
        for name, rows in result["snr"].items():
            pts = [(r["k"], r[group][PLOTTED]) for r in rows if group in r and r[group][PLOTTED]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ks = np.array(result["ks"], float)
        if len(ks) > 1:
            for slope, style in ((-0.5, ":"), (0.5, "--")):
                ax.plot(ks, (ks / ks[0]) ** slope * 0.1, style, color="gray", lw=0.8,
                        label=f"slope {slope:+.1f}" if group == "encoder" else None)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K (samples per example)")
        ax.set_ylabel("gradient SNR (mean over parameters)")
        ax.set_title(f"{group}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or f"gradient SNR, R={result['num_draws']} draws, batch {result['batch_size']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxvae.diagnose", description=__doc__.split("\n\n")[0])
    p.add_argument("workdir")
    p.add_argument("--ks", default="1,4,16,64,256", help="comma-separated K values")
    p.add_argument("--estimators", default=",".join(ESTIMATORS), help="registered objective names")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest", "init"))
    p.add_argument("--draws", type=int, default=100, help="R, gradient draws per (estimator, K)")
    p.add_argument("--batch", type=int, default=20, help="test examples in the fixed batch")
    p.add_argument("--m", type=int, default=4, help="M of MIWAE/PIWAE (K = budget // M)")
    p.add_argument("--beta-ciwae", type=float, default=0.5)
    p.add_argument("--chunk", type=int, default=4, help="gradient draws vmapped at once (memory)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        ks = [int(k) for k in a.ks.split(",") if k]
        estimators = [e for e in a.estimators.split(",") if e]
    except ValueError:
        print(f"error: --ks={a.ks!r} must be comma-separated integers", file=sys.stderr)
        return 2
    from jaxvae.vae.registry import OBJECTIVES

    bad = [e for e in estimators if e not in OBJECTIVES]
    if not ks or min(ks) < 1 or a.draws < 2 or a.batch < 1 or a.m < 1 or bad or not 0 <= a.beta_ciwae <= 1:
        what = f"unknown estimators {bad} (known: {', '.join(OBJECTIVES.names())})" if bad else \
            "--ks must be integers >= 1, --draws >= 2, --batch >= 1, --m >= 1, 0 <= --beta-ciwae <= 1"
        print(f"error: {what}", file=sys.stderr)
        return 2
    from jaxvae.experiment.eval_driver import binarize_eval
    from jaxvae.experiment.run import RunNotFound, load_run

    try:
        run = load_run(a.workdir, "latest" if a.checkpoint == "init" else a.checkpoint)
    except RunNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = run_params(run, a.checkpoint)
    x = binarize_eval(np.asarray(run.test_data()[: a.batch], np.float32), run.config.data.binarize, a.seed)
    result = diagnose(run.model, params, jax.numpy.asarray(x), jax.random.key(a.seed), ks=ks, estimators=estimators,
                      num_draws=a.draws, m=a.m, beta_ciwae=a.beta_ciwae, chunk=a.chunk)
    result.update(workdir=str(run.workdir), checkpoint=a.checkpoint, step=0 if a.checkpoint == "init" else run.step)
    out = Path(run.workdir) / f"snr_{a.checkpoint}.json"
    out.write_text(json.dumps(result, indent=1))
    png = out.with_suffix(".png")
    plot_snr(result, png, f"{run.config.name} ({run.config.objective.name}), {a.checkpoint} "
                          f"(step {result['step']}): gradient SNR, R={a.draws}, batch {x.shape[0]}")
    for name, rows in result["snr"].items():
        cells = "  ".join(f"K={r['k']}: enc {r['encoder'][PLOTTED]:.3g} dec {r['decoder'][PLOTTED]:.3g}" for r in rows)
        print(f"{name:<10} {cells}")
    print(f"wrote {out} and {png} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
