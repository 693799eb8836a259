"""End-to-end benchmark experiment for vectorized sweeps: 8 seeds of the IWAE-paper MLP on binarized MNIST
(batch 20, constant learning rate), each run a whole job (process start, data, compile, training,
validation, test evaluation). Build the TFDS dataset once first (any run does it, e.g. `--only 0` into a
scratch root), so that neither timing includes it; then time it both ways (benchmarks/README.md,
"Vectorized sweeps"):

    time ./launch.sh benchmarks/seeds_mnist.py --root /tmp/seq --no-vectorize --no-report \\
        --config.data.manual_dir=../shared/data --config.train.num_epochs=1
    time ./launch.sh benchmarks/seeds_mnist.py --root /tmp/vec --vectorize 8 --no-report \\
        --config.data.manual_dir=../shared/data --config.train.num_epochs=1
"""

import importlib.util
import os


def _iwae_mnist():
    """experiments/iwae_mnist.py's config: the IWAE paper's model and optimizer."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "experiments", "iwae_mnist.py")
    spec = importlib.util.spec_from_file_location("_iwae_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    c = _iwae_mnist()
    c.name = "seeds_mnist"
    c.objective.name, c.objective.k = "elbo", 1
    c.train.schedule = "constant"
    c.train.num_epochs = 1
    c.train.log_every_steps = 2500
    c.train.eval_every_epochs = 1
    c.eval.ks = (1, 5, 50)
    c.eval.valid_examples = 1000
    c.eval.max_examples = 1000
    c.eval.images = False
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"seed": list(range(8))})
