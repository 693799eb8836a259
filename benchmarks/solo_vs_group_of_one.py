"""Cost of running a solo run as a vectorized group of one (issue 12, part 5): the solo loop
(``runner.train_and_evaluate``, ``train.make_run_steps``) against ``vectorized.train_group`` with one
member (``vectorized.make_group_steps``).

    python benchmarks/solo_vs_group_of_one.py --reps 5 --steps 400 --e2e-reps 3

Steady state: ms per training step of one compiled dispatch of ``--steps`` steps (compilation excluded),
solo and group-of-one interleaved, ``--reps`` repetitions each, median and best reported, for

* quickstart: digits (64 pixels), 64-128-128-8, IWAE K=5, batch 50;
* mlp20 / mlp100: the IWAE paper's 784-200-200-50 tanh MLP, Bernoulli, ELBO, batch 20 / 100, on
  binarized MNIST from ``../shared/data`` (random binary pixels when it is absent).

End to end: the wall time of a whole in-process run (data, compile, train, validate, test, results.json)
of ``runner.train_and_evaluate`` and of ``train_group([config])``, interleaved, ``--e2e-reps`` each, on
a fresh workdir (compilations are cached within the process after the first repetition, so the first
repetition of each is reported apart). Since the single host loop (issue 27), ``train_group`` with one
member runs the solo device program (this benchmark's steady-state figures are why), so the end-to-end
comparison now checks that the group door adds nothing; the end-to-end figures in benchmarks/README.md were
measured before, when a group of one still ran the vmapped program.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import common
from common import ROOT
from jaxvae import data as data_lib
from jaxvae.experiment import building
from jaxvae.experiment import runner as R
from jaxvae.experiment import train as train_lib
from jaxvae.experiment import vectorized as V
from jaxvae.experiment.configs import base_config

MNIST = ROOT.parent / "shared" / "data" / "binarized_mnist.npz"


def quickstart_config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("qs", ROOT / "experiments" / "quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.train.num_epochs = 8
    c.train.eval_every_epochs = 4
    c.train.checkpoint_every_epochs = 4
    c.train.log_every_steps = 10**6
    c.eval.ks = (1, 5, 50)
    c.eval.max_examples = 200
    c.eval.valid_examples = 100
    c.eval.images = False
    return c


def mlp_config(batch: int):
    c = base_config()
    c.name = f"mlp{batch}"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 50
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.model.activation = "tanh"
    c.model.likelihood = "bernoulli"
    c.objective.name, c.objective.k = "elbo", 1
    c.train.batch_size = batch
    c.train.schedule = "constant"
    c.train.num_epochs = 1
    c.train.eval_every_epochs = 1
    c.train.checkpoint_every_epochs = 1
    c.train.log_every_steps = 10**6
    c.eval.ks = (1, 5)
    c.eval.max_examples = 500
    c.eval.valid_examples = 500
    c.eval.images = False
    return c


def mnist_dataset(n_train: int) -> data_lib.Dataset:
    if MNIST.exists():
        z = np.load(MNIST)
        tr, va, te = (z[s].astype(np.float32) for s in ("train", "valid", "test"))
    else:
        rng = np.random.default_rng(0)
        tr, va, te = ((rng.random((n, 784)) < 0.13).astype(np.float32) for n in (50000, 1000, 1000))
    return data_lib.Dataset(tr[:n_train], va[:1000], te[:1000], image_shape=(28, 28, 1), name="binarized_mnist",
                            is_binary=True)


def programs(config, dataset):
    model = building.build_model(config, dataset.train.shape[1])
    bs = config.train.batch_size
    spe = train_lib.steps_per_epoch_for(len(dataset.train), bs)
    sched, _ = train_lib.learning_rate_schedule(config, spe)
    tx = train_lib.make_optimizer(config, sched)

    def tx_for(hp):
        return train_lib.make_optimizer(config, train_lib.learning_rate_schedule(config, spe, hp["learning_rate"])[0])

    state = train_lib.create_train_state(model, tx, config.seed, building.output_bias(config, model, dataset.train))
    solo = train_lib.make_run_steps(model, config, tx, spe, bs, None)
    group = V.make_group_steps(model, config, tx, tx_for, spe, bs, None, False)
    x = jnp.asarray(dataset.train)
    hp = V.stack_hparams([config])
    active = jnp.ones((1,), bool)
    stacked = V.stack_trees([state])
    return (lambda n: solo(jax.tree_util.tree_map(jnp.copy, state), x, n),
            lambda n: group(jax.tree_util.tree_map(jnp.copy, stacked), x, hp, active, n))


def steady(name, config, dataset, steps, reps):
    solo, group = programs(config, dataset)
    jax.block_until_ready(solo(steps))  # compile
    jax.block_until_ready(group(steps))
    walls, _, _ = common.round_robin({"solo": lambda: jax.block_until_ready(solo(steps)),
                                      "group": lambda: jax.block_until_ready(group(steps))}, reps, alternate=True)
    times = {which: [1000 * w / steps for w in ws] for which, ws in walls.items()}
    row = {"case": name, "kind": "steady", "steps": steps,
           **{f"{k}_ms_per_step_median": statistics.median(v) for k, v in times.items()},
           **{f"{k}_ms_per_step_best": min(v) for k, v in times.items()}, "raw": times}
    row["group_over_solo_median"] = row["group_ms_per_step_median"] / row["solo_ms_per_step_median"]
    row["group_over_solo_best"] = row["group_ms_per_step_best"] / row["solo_ms_per_step_best"]
    print(json.dumps(row), flush=True)
    return row


def end_to_end(name, config, dataset, reps, tmp):
    if dataset is not None:
        building.load_data = lambda c: dataset  # noqa: E731 - in-process stand-in for a TFDS build
    quiet = lambda *a, **k: None  # noqa: E731
    times = {"solo": [], "group": []}
    results = {}
    for r in range(reps):
        order = ["solo", "group"] if r % 2 == 0 else ["group", "solo"]
        for which in order:
            wd = Path(tmp) / f"{name}-{which}-{r}"
            t = time.perf_counter()
            if which == "solo":
                res = R.train_and_evaluate(config, wd, log=quiet)
            else:
                res = V.train_group([config], [wd], log=quiet, vectorized_eval=False)[0]
            times[which].append(time.perf_counter() - t)
            results[which] = res["test"]["iwae"]
    row = {"case": name, "kind": "end_to_end", "first_solo_s": times["solo"][0], "first_group_s": times["group"][0],
           "solo_s_median_rest": statistics.median(times["solo"][1:]) if reps > 1 else None,
           "group_s_median_rest": statistics.median(times["group"][1:]) if reps > 1 else None,
           "raw": times, "test_iwae": results}
    if reps > 1:
        row["group_over_solo_rest"] = row["group_s_median_rest"] / row["solo_s_median_rest"]
    print(json.dumps(row, default=float), flush=True)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--e2e-reps", type=int, default=3)
    p.add_argument("--cases", default="quickstart,mlp20,mlp100")
    p.add_argument("--out", default=None, help="also write the rows to this JSON file")
    a = p.parse_args()
    info = common.device_info()
    print(common.machine_line(info), flush=True)
    rows = []
    mnist = mnist_dataset(10000)
    for case in a.cases.split(","):
        if case == "quickstart":
            c = quickstart_config()
            ds = building.load_data(c)
            rows.append(steady(case, c, ds, a.steps, a.reps))
        else:
            c = mlp_config(int(case[3:]))
            rows.append(steady(case, c, mnist, a.steps, a.reps))
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases.split(","):
            if case == "quickstart":
                rows.append(end_to_end(case, quickstart_config(), None, a.e2e_reps, tmp))
            else:
                rows.append(end_to_end(case, mlp_config(int(case[3:])), mnist, a.e2e_reps, tmp))
    common.finish(info)
    print(f"# load at the end {info['loadavg_end']}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"device_info": info, "rows": rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
