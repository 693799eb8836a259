"""VampPrior (Tomczak & Welling 2018) vs the standard normal prior on statically binarized MNIST.

p(z) = (1/K) sum_k q(z | u_k) with K in {50, 500} learned pseudo-inputs, initialised from K training
examples (model.prior_options.init_from = "data"). The ELBO's KL is Monte Carlo (a VampPrior has no closed form).
The published static-MNIST NLL (85.57, one stochastic layer with the paper's MLP sizes; pythae
reproduced 85.79) is in jaxvae/sweeps/papers/tomczak2018.json; this file's MLP is smaller.

    ./launch.sh experiments/vampprior_mnist.py --config.train.budget=0.05 --config.eval.max_examples=1000
"""

from jaxvae.experiment.configs import flow_mnist_config


def get_config():
    c = flow_mnist_config()  # binarized MNIST, ELBO, batch 100, 100 passes, constant schedule
    c.name = "vampprior_mnist"
    c.model.encoder_hidden = (300, 300)
    c.model.decoder_hidden = (300, 300)
    c.model.prior = "vampprior"
    c.model.prior_options.components = 500
    c.model.prior_options.init_from = "data"
    c.objective.kl_warmup_steps = 0
    c.train.learning_rate = 5e-4
    c.train.grad_clip_norm = 0.0  # no clipping here
    return c


def get_sweep():
    from jaxvae.sweeps import chain
    return chain({"model.prior": ["standard_normal"]},
                 {"model.prior": ["vampprior"], "model.prior_options.components": [50, 500]})
