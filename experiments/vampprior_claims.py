"""The VampPrior past 5 passes (issue 28 item 2): K = 500 pseudo-inputs beside K = 50 and the standard normal
prior (the cost and NLL baseline of the same network; ``vampprior_mnist.get_sweep()``), with
``experiments/vampprior_mnist.py``'s settings (784-300-300-40 tanh MLPs, Gaussian posterior, Monte Carlo KL,
Adam 5e-4), 30 passes (``train.budget=0.3`` of its 100), 2 seeds, NLL = -IWAE_5000 and the ELBO on the same
2000 test images as ``experiments/flows_claims.py``.

    ./launch.sh experiments/vampprior_claims.py --root runs/claims --config.data.manual_dir=../shared/data
    python -m jaxvae.sweeps.report runs/claims/vampprior_claims
"""

from pathlib import Path

from jaxvae.sweeps.plan import load_module

vampprior_mnist = load_module(str(Path(__file__).with_name("vampprior_mnist.py")))


def get_config():
    c = vampprior_mnist.get_config()
    c.name = "vampprior_claims"
    c.train.budget = 0.3
    c.eval.max_examples = 2000
    c.eval.ks = (1, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import product

    return product(vampprior_mnist.get_sweep(), {"seed": [0, 1]})
