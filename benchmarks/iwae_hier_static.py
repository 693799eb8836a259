"""The measurement of issue #14 on this CPU: experiments/iwae_table1.py's models on the statically binarized
MNIST of ``--config.data.manual_dir`` (required: the folder with binarized_mnist.npz or the .amat files;
../shared/data on the development machine; the real MNIST training images are not available offline here), VAE k=1 and
IWAE k=5, one and two stochastic layers, 2 seeds trained together (vectorized).

The issue's measurement (budget 0.03 = 98 passes; NLL = -IWAE_5000 on all 10000 test images; train-set
bounds on a fixed 1000 training images)::

    ./launch.sh benchmarks/iwae_hier_static.py --vectorize 2 --parallel 2 --root runs/iwae14 \
        --config.data.manual_dir=../shared/data \
        --config.train.budget=0.03 --config.eval.max_examples=0 --config.eval.train_examples=1000 \
        --config.eval.valid_examples=1000
    python benchmarks/iwae_hier_static.py runs/iwae14/iwae_hier_static

The defaults below (500 test images, 300 training images) are the smaller evaluation of the first,
budget-0.001 run (sized for a 2-core machine shared by ~8 jobs, load ~25). Evaluation subsets are fixed
(evaluations.subset: a seeded random subset, not a prefix). Published values (dynamically binarized MNIST, full
budget): jaxvae/sweeps/papers/burda2015_table1.json; on the static binarization expect about 2 nats worse.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "iwae_table1", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments", "iwae_table1.py"))
table1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1)


def get_config():
    c = table1.get_config()
    c.name = "iwae_hier_static"
    c.data.name = "binarized_mnist"
    c.data.manual_dir = ""  # required: --config.data.manual_dir=DIR (binarized_mnist.npz or the .amat files)
    c.data.download = False  # without it the data builder says which files to put where
    c.data.binarize = "none"
    c.data.valid_size = 0  # the fixed 10000-image validation split
    c.eval.binarize_seed = -1
    c.eval.max_examples = 500
    c.eval.train_examples = 300
    c.eval.valid_examples = 300
    c.eval.valid_k = 50
    return c


def get_sweep():
    points = []
    for layers, dims in table1.LAYERS:
        for obj, k in (("elbo", 1), ("iwae", 5)):
            for seed in (0, 1):
                points.append({"model.stochastic_layers": layers, "model.latent_dims": dims,
                               "objective.name": obj, "objective.k": k, "seed": seed})
    return points


def summarize(root: str = "runs/bench/iwae_hier_static") -> str:
    """The markdown table of benchmarks/README.md from the finished runs under ``root``: per model, NLL
    (mean ± std over seeds, and per seed), train-set NLL and the gap, active units per layer, the published
    dynamic-MNIST value and the static anchor (published + ~2 nats), then the paper's orderings, checked on
    paired per-seed differences."""
    import json
    import math
    from pathlib import Path

    published = {(1, "elbo", 1): 86.76, (1, "iwae", 5): 85.54, (2, "elbo", 1): 85.33, (2, "iwae", 5): 83.89}
    runs = {}
    for f in sorted(Path(root).glob("*/results.json")):
        r = json.loads(f.read_text())
        c = r["config"]
        key = (c["model"]["stochastic_layers"], c["objective"]["name"], c["objective"]["k"])
        runs.setdefault(key, {})[c["seed"]] = r

    def ms(xs):
        m = sum(xs) / len(xs)
        s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
        return m, s

    if not runs:
        return f"no finished runs under {root}"
    any_run = next(iter(next(iter(runs.values())).values()))
    ts = any_run.get("train_set") or {}
    lines = [f"budget {any_run['config']['train']['budget']} ({any_run['train']['epochs']} passes), "
             f"{any_run['test']['num_examples']} test images, {ts.get('num_examples', '?')} training images "
             "for the train-set bounds", "",
             "| model | seeds | test NLL (mean ± std) | per seed | train NLL | train − test | active units "
             "(z_1+z_2) | test ELBO | IWAE_50 | published (dynamic) | static anchor (≈ +2) | train time (s) |",
             "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key in sorted(runs):
        g = runs[key]
        seeds = sorted(g)
        nll = [g[s]["test"]["nll"] for s in seeds]
        tr = [g[s]["train_set"]["nll"] for s in seeds]
        m, sd = ms(nll)
        tm, _ = ms(tr)
        au = [g[s]["test"]["active_units_per_layer"] for s in seeds]
        au_txt = ", ".join("+".join(str(v) for v in a) for a in au)
        label = f"{key[0]} layer{'s' if key[0] > 1 else ''}, {'VAE' if key[1] == 'elbo' else 'IWAE'}, k={key[2]}"
        pub = published.get(key)
        lines.append(
            f"| {label} | {len(seeds)} | {m:.2f} ± {sd:.2f} | {' / '.join(f'{x:.2f}' for x in nll)} | {tm:.2f} | "
            f"{tm - m:+.2f} | {au_txt} | {ms([g[s]['test']['elbo'] for s in seeds])[0]:.2f} | "
            f"{ms([g[s]['test']['iwae']['50'] for s in seeds])[0]:.2f} | {pub if pub else ''} | "
            f"{f'{pub + 2:.2f}' if pub else ''} | {ms([g[s]['train']['wall_time_s'] for s in seeds])[0]:.0f} |")

    def order(better, worse, what):
        if better not in runs or worse not in runs:
            return f"- {what}: not measured"
        seeds = sorted(set(runs[better]) & set(runs[worse]))
        d = [runs[worse][s]["test"]["nll"] - runs[better][s]["test"]["nll"] for s in seeds]
        holds = all(x > 0 for x in d)
        return (f"- {what}: {'holds' if holds else 'does NOT hold'} (worse − better NLL per seed: "
                f"{', '.join(f'{x:+.2f}' for x in d)})")

    lines += ["", order((2, "elbo", 1), (1, "elbo", 1), "2 layers better than 1 (VAE k=1)"),
              order((2, "iwae", 5), (1, "iwae", 5), "2 layers better than 1 (IWAE k=5)"),
              order((1, "iwae", 5), (1, "elbo", 1), "IWAE k=5 better than VAE k=1 (1 layer)"),
              order((2, "iwae", 5), (2, "elbo", 1), "IWAE k=5 better than VAE k=1 (2 layers)")]
    return "\n".join(lines)


def unit_kl(root: str, examples: int = 1000, samples: int = 20, threshold: float = 0.1) -> str:
    """Per layer, how many units carry information by their share of the KL rather than by the variance
    criterion: ``HierarchicalVAE.unit_kl`` (Monte Carlo, ``samples`` draws) for two layers, the closed form
    (sigma^2 - 1 - log sigma^2 + mu^2) / 2 for one layer, averaged over the first ``examples`` test images.
    A unit of z_1 whose posterior just follows its conditional prior p(z_1|z_2), whose mean moves with z_2
    and so with x, passes the variance criterion Cov_x E_q[z_1] > 1e-2 while carrying ~0 nats."""
    import glob
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxvae
    from jaxvae.vae.distributions import kl_standard_normal_per_unit

    lines = [f"per-unit KL on the first {examples} test images ({samples} posterior draws for two layers); "
             f"units above {threshold} nat / units passing the variance criterion (1e-2), per layer"]
    for wd in sorted(glob.glob(os.path.join(root, "*", "results.json"))):
        wd = os.path.dirname(wd)
        run = jaxvae.load_run(wd, checkpoint="latest")
        m, params = run.model, run.params
        x = jnp.asarray(run.test_data()[:examples], jnp.float32)
        if getattr(m, "stochastic_layers", 1) > 1:
            kl = [np.asarray(t).mean(0) for t in m.unit_kl(params, x, jax.random.key(0), samples)]
        else:
            post = m.encode(params, x)
            kl = [np.asarray(kl_standard_normal_per_unit(post.mu, post.logvar)).mean(0)]
        au = json.load(open(os.path.join(wd, "results.json")))["test"].get("active_units_per_layer")
        counts = ", ".join(f"z_{l + 1}: {int((k > threshold).sum())}" + (f"/{au[l]}" if au else "")
                           for l, k in enumerate(kl))
        lines.append(f"- {os.path.basename(wd)}: {counts} (KL {' + '.join(f'{k.sum():.2f}' for k in kl)} nats)")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if args[:1] == ["--unit-kl"]:
        print(unit_kl(*args[1:]))
    else:
        print(summarize(*args))
