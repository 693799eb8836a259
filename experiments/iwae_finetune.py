"""Burda, Grosse & Salakhutdinov (2015), Table 2: continue a trained model with the other objective.

VAE (k=1) -> IWAE (k=50) and IWAE (k=50) -> VAE (k=1), one and two stochastic layers, both datasets: each
run starts from the parameters of the matching run of experiments/iwae_table1.py (``train.init_from``, its
best checkpoint, a fresh Adam) and trains 3^7 more passes at learning rate 1e-4 (``train.budget`` scales
the passes as in Table 1: budget=0.01 is 21.9 passes). It depends on the Table 1 runs: run that sweep
first, from the repository root into runs/ (init_from names runs/iwae_table1/<run name>):

    ./launch.sh experiments/iwae_table1.py --vectorize 2 --config.train.budget=0.01
    ./launch.sh experiments/iwae_finetune.py --vectorize 2 --config.train.budget=0.01

The paper's Table 2 values are not in jaxvae/sweeps/papers/ (the issue quotes only Table 1's).
"""

import importlib.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("iwae_table1", os.path.join(_HERE, "iwae_table1.py"))
table1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1)

SOURCE_ROOT = os.path.join("runs", "iwae_table1")
# (source objective, source k) -> (continuation objective, k)
CONTINUATIONS = ((("elbo", 1), ("iwae", 50)), (("iwae", 50), ("elbo", 1)))


def get_config():
    c = table1.get_config()
    c.name = "iwae_finetune"
    c.train.schedule = "constant"
    c.train.num_epochs = 3**7  # 2187 passes, scaled by train.budget
    c.train.learning_rate = 1e-4
    c.train.init_checkpoint = "best"
    return c


def get_sweep():
    from jaxvae.sweeps.plan import run_names

    sources = table1.table1_points()
    names = dict(zip(map(_key, sources), run_names(sources)))
    points = []
    for p in sources:
        for (src_obj, src_k), (obj, k) in CONTINUATIONS:
            if (p["objective.name"], p["objective.k"]) == (src_obj, src_k):
                points.append({**p, "objective.name": obj, "objective.k": k,
                               "train.init_from": os.path.join(SOURCE_ROOT, names[_key(p)])})
    return points


def _key(p):
    return tuple(sorted((k, str(v)) for k, v in p.items()))
