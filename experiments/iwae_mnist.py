"""IWAE on statically binarized MNIST (Burda, Grosse & Salakhutdinov 2015), one stochastic layer.

784-200-200-50 tanh encoder, symmetric decoder, Bernoulli likelihood; Adam(0.9, 0.999, eps=1e-4), batch
20, 3^i passes at learning rate 1e-3 * 10^(-i/7) for i = 0..7 (3280 passes; ``train.budget`` scales it:
budget=0.01 is 32.8 passes). Decoder output bias = the training pixels' log-odds. Evaluation: ELBO and
IWAE_K for K = 1, 5, 50, 5000 on all 10000 test images (K = 5000 is the NLL estimate).

    ./launch.sh experiments/iwae_mnist.py --config.train.budget=0.01
    python -m jaxvae.main --config=experiments/iwae_mnist.py --workdir=runs/iwae_k50 --config.objective.k=50
"""

from jaxvae.experiment.configs import iwae_paper_config


def get_config():
    c = iwae_paper_config()  # the paper's model, optimizer, schedule and evaluation
    c.name = "iwae_mnist"
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"objective.k": [1, 5, 50]})
