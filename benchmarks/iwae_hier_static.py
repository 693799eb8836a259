"""The measurement of issue #14 on this CPU: experiments/iwae_table1.py's models on the statically binarized
MNIST of ../shared/data (the real MNIST training images are not available offline here), VAE k=1 and
IWAE k=5, one and two stochastic layers, 2 seeds trained together (vectorized).

    ./launch.sh benchmarks/iwae_hier_static.py --vectorize 2 --parallel 4 --root runs/bench \\
        --config.train.budget=0.001
    python -m jaxvae.sweeps.report runs/bench/iwae_hier_static

Evaluation on fixed subsets (runner._subset: a seeded random subset, not a prefix): 500 test images and
300 training images, K = 5000 for the NLL (sized for a 2-core machine shared by ~8 jobs, load ~25). Published values (dynamically binarized MNIST, full budget):
jaxvae/sweeps/papers/burda2015_table1.json; on the static binarization expect about 2 nats worse.
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
    c.data.manual_dir = "/work/shared/data"
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
