"""Rainforth et al. 2018, "Tighter variational bounds are not necessarily better", on statically binarized
MNIST (issue 28): the IWAE paper's one-layer 784-200-200-50 tanh network and optimiser
(``iwae_paper_config``), 64 samples per example for every objective, 2 seeds, no per-objective tuning.

    IWAE(64) | MIWAE(8, 8) | PIWAE(8, 8) | CIWAE(0.5) with K=64 | VAE (ELBO) with 64 samples | IWAE-DReG(64)

    ./launch.sh experiments/rainforth_static.py --root runs/claims --vectorize 2 \\
        --config.train.budget=0.01 --config.data.manual_dir=../shared/data
    python -m jaxvae.diagnose runs/claims/rainforth_static/<run>      # gradient SNR after training
    python -m jaxvae.sweeps.report runs/claims/rainforth_static

The two seeds of each objective differ only in the seed, so ``--vectorize 2`` trains them as one vmapped
group. Every run is evaluated on all 10000 test images: ELBO and IWAE_K for K = 1, 5, 64, 5000
(NLL = -IWAE_5000; log p(x) - ELBO is the inference network's KL gap). The published values
(``rainforth2018``) are for dynamically binarized MNIST at the paper's budget: another binarization and
budget, set beside ours only as anchors.
"""

from jaxvae.experiment.configs import iwae_paper_config

ESTIMATORS = (  # (name, objective.name, objective.m, objective.k): 64 samples per example each
    ("iwae_64", "iwae", 1, 64),
    ("miwae_8x8", "miwae", 8, 8),
    ("piwae_8x8", "piwae", 8, 8),
    ("ciwae_0.5", "ciwae", 1, 64),
    ("vae_64", "elbo", 1, 64),
    ("dreg_64", "iwae_dreg", 1, 64),
)


def get_config():
    c = iwae_paper_config()
    c.name = "rainforth_static"
    c.data.name = "binarized_mnist"
    c.data.binarize = "none"  # the static binarization of the file
    c.objective.k = 64
    c.objective.beta_ciwae = 0.5
    c.eval.ks = (1, 5, 64, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import product, zipped

    cols = list(zip(*ESTIMATORS))
    objectives = zipped({"name": list(cols[0]), "objective.name": list(cols[1]), "objective.m": list(cols[2]),
                         "objective.k": list(cols[3])})
    return product(objectives, {"seed": [0, 1]})
