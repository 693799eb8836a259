"""How loose is IWAE_5000 on the Rainforth grid? AIS beside it on the same test images (issue 28).

    python benchmarks/issue28_ais.py runs/claims/rainforth_static --examples 200 --steps 1000 --chains 8
    python benchmarks/issue28_ais.py runs/claims/rainforth_static --examples 50 --steps 4000 --runs '*seed=0'

IWAE_5000's PSIS k-hat is above 0.7 for 97-99.6% of the grid's test images (docs/tighter_bounds.md): its
weights are heavy-tailed, so it under-reports log p(x) by an amount that may differ between objectives
(a model with a poorer encoder gets a poorer proposal). AIS from the encoder (Neal 2001; Wu et al. 2017:
T intermediate distributions q(z|x)^(1-b_t) p(x,z)^(b_t), HMC transitions, ``chains`` independent chains,
log p_hat = log mean of the chains' weights) is another stochastic lower bound of log p(x), and its
difference to IWAE_5000 on the same image bounds IWAE_5000's shortfall from below.

For every finished run under the sweep folder, on the first ``--examples`` of the run's own evaluation
examples (``Run.eval_examples()``, the same images for every run), ``Run.ais`` gives per-image AIS and
IWAE_5000 (the run's own key). Writes ``<run>/ais_check_T<steps>_C<chains>_N<examples>.json`` (settings,
per-image arrays, seconds) and skips runs that have it (run again to resume). Prints, per objective
(seeds pooled: mean over seeds of the per-seed means, and the largest per-seed standard error over
images), IWAE_5000, AIS and AIS - IWAE_5000 on these images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

IWAE_K = 5000  # the grid's log p(x) estimate, compared with AIS on the same images


def check_run(workdir: Path, examples: int, steps: int, chains: int, batch: int) -> dict:
    """AIS and IWAE_5000 per image on the run's first ``examples`` evaluation examples (cached in JSON)."""
    out = workdir / f"ais_check_T{steps}_C{chains}_N{examples}.json"
    if out.exists():
        return json.loads(out.read_text())
    import jaxvae
    from jaxvae.experiment.workdir import write_json

    run = jaxvae.load_run(str(workdir))
    x = run.eval_examples()[:examples]
    t0 = time.time()
    est = run.ais(x, num_steps=steps, chains=chains, iwae_k=IWAE_K, batch_size=batch)
    record = {"steps": steps, "chains": chains, "examples": int(x.shape[0]), "init": "encoder", "iwae_k": IWAE_K,
              "ais": np.asarray(est.log_px).tolist(), "iwae": np.asarray(est.iwae).tolist(),
              "acceptance": float(np.mean(est.acceptance)), "seconds": time.time() - t0,
              "objective": run.config.name, "seed": int(run.config.seed)}
    write_json(out, record)
    return record


def summary_rows(records: list[dict]) -> list[str]:
    """Markdown rows: objective, seeds, IWAE_5000, AIS, AIS - IWAE_5000 (mean over seeds; ± the largest
    per-seed standard error over images of the paired difference), acceptance."""
    by: dict[str, list[dict]] = {}
    for r in records:
        by.setdefault(r["objective"], []).append(r)
    rows = []
    for name, rs in by.items():
        iw = [np.mean(r["iwae"]) for r in rs]
        ais = [np.mean(r["ais"]) for r in rs]
        diff = [np.asarray(r["ais"]) - np.asarray(r["iwae"]) for r in rs]
        seed_means = [float(np.mean(d)) for d in diff]
        se = max(float(np.std(d, ddof=1) / np.sqrt(d.size)) for d in diff)
        per_seed = ", ".join(f"{m:+.2f}" for m in seed_means)
        rows.append(f"| {name} | {len(rs)} | {np.mean(iw):.2f} | {np.mean(ais):.2f} | "
                    f"{np.mean(seed_means):+.2f} ± {se:.2f} ({per_seed}) | "
                    f"{np.mean([r['acceptance'] for r in rs]):.2f} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep", type=Path, help="a sweep folder (e.g. runs/claims/rainforth_static)")
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--steps", type=int, default=1000, help="AIS intermediate distributions T")
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--batch", type=int, default=50, help="images per compiled AIS program")
    p.add_argument("--runs", default="*", help="a glob of run folder names (default: every finished run)")
    args = p.parse_args(argv)
    runs = sorted(d for d in args.sweep.glob(args.runs) if (d / "results.json").exists())
    if not runs:
        print(f"error: no finished run under {args.sweep} (a run folder has results.json)", file=sys.stderr)
        return 2
    records = []
    for wd in runs:
        r = check_run(wd, args.examples, args.steps, args.chains, args.batch)
        print(f"{wd.name}: IWAE_5000 {np.mean(r['iwae']):.2f}  AIS {np.mean(r['ais']):.2f}  "
              f"({r['seconds']:.0f} s)", flush=True)
        records.append(r)
    print(f"\nAIS from the encoder, T={args.steps}, {args.chains} chains, the first {args.examples} test images:\n")
    print("| objective | seeds | IWAE_5000 | AIS | AIS - IWAE_5000 (per seed) | HMC acceptance |")
    print("|---|---:|---:|---:|---|---:|")
    print("\n".join(summary_rows(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
