"""The VAE baseline of Burda et al. (2015): the IWAE-paper setting trained with the ELBO.

Same network, data, optimizer and schedule as ``iwae_mnist.py``; objective.k is the number of samples
of the multi-sample ELBO (k in {1, 5, 50}, the paper's VAE rows).

    ./launch.sh experiments/vae_mnist.py --config.train.budget=0.01
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location("iwae_mnist", pathlib.Path(__file__).with_name("iwae_mnist.py"))
_iwae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_iwae)


def get_config():
    c = _iwae.get_config()
    c.name = "vae_mnist"
    c.objective.name = "elbo"
    c.objective.k = 1
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"objective.k": [1, 5, 50]})
