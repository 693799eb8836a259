"""Tighter bounds are not necessarily better (Rainforth et al. 2018): seven estimators with 64 samples per
example on dynamically binarized MNIST, the IWAE paper's network and schedule (Burda et al. 2015:
784-200-200-50 tanh, Adam(0.9, 0.999, eps=1e-4), batch 20, 3^i passes at lr 1e-3 * 10^(-i/7), i = 0..7;
``train.budget`` scales the passes). Test ELBO, IWAE_K for K = 1, 5, 50, 5000 (NLL = -IWAE_5000), ESS/K and
the Pareto k-hat of the K = 5000 weights.

    IWAE(64) | MIWAE(8, 8) | PIWAE(8, 8) | CIWAE(0.5) with K=64 | VAE (ELBO) with 64 samples | RWS(K=64) | DReG(64)

    ./launch.sh experiments/tighter_bounds.py --config.train.budget=0.01
    python -m jaxvae.diagnose runs/tighter_bounds/<run> --checkpoint init   # gradient SNR vs K, at init
    python -m jaxvae.diagnose runs/tighter_bounds/<run>                     # ... and after training
    python -m jaxvae.sweeps.report runs/tighter_bounds

Offline with the shared binarized MNIST file: --config.data.name=binarized_mnist --config.data.binarize=none
--config.data.manual_dir=/work/shared/data (statically binarized; the published numbers are for dynamic).
"""

from jaxvae.experiment.configs import iwae_paper_config


def get_config():
    c = iwae_paper_config()  # the paper's model, optimizer, schedule and evaluation
    c.name = "tighter_bounds"
    c.data.name = "mnist"
    c.data.binarize = "dynamic"
    c.objective.k = 64
    return c


# (label, objective.name, objective.m, objective.k, objective.beta_ciwae): 64 samples per example each
ESTIMATORS = (
    ("iwae_64", "iwae", 1, 64, 0.5),
    ("miwae_8x8", "miwae", 8, 8, 0.5),
    ("piwae_8x8", "piwae", 8, 8, 0.5),
    ("ciwae_0.5", "ciwae", 1, 64, 0.5),
    ("vae_64", "elbo", 1, 64, 0.5),
    ("rws_64", "rws", 1, 64, 0.5),
    ("dreg_64", "iwae_dreg", 1, 64, 0.5),
)


def get_sweep():
    from jaxvae.sweeps import zipped
    cols = list(zip(*ESTIMATORS))
    return zipped({"name": list(cols[0]), "objective.name": list(cols[1]), "objective.m": list(cols[2]),
                   "objective.k": list(cols[3]), "objective.beta_ciwae": list(cols[4])})
