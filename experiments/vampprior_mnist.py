"""VampPrior (Tomczak & Welling 2018) vs the standard normal prior on statically binarized MNIST.

p(z) = (1/K) sum_k q(z | u_k) with K in {50, 500} learned pseudo-inputs, initialised from K training
examples (model.prior_init = "data"). The ELBO's KL is Monte Carlo (a VampPrior has no closed form).
The published static-MNIST NLL (85.57, one stochastic layer with the paper's MLP sizes; pythae
reproduced 85.79) is in jaxvae/sweeps/papers/tomczak2018.json; this file's MLP is smaller.

    ./launch.sh experiments/vampprior_mnist.py --config.train.budget=0.05 --config.eval.max_examples=1000
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "vampprior_mnist"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 40
    c.model.encoder_hidden = (300, 300)
    c.model.decoder_hidden = (300, 300)
    c.model.activation = "tanh"
    c.model.prior = "vampprior"
    c.model.prior_components = 500
    c.model.prior_init = "data"
    c.objective.name = "elbo"
    c.objective.kl_warmup_steps = 0
    c.train.batch_size = 100
    c.train.schedule = "constant"
    c.train.num_epochs = 100
    c.train.learning_rate = 5e-4
    c.train.log_every_steps = 5000
    c.train.eval_every_epochs = 10
    c.eval.ks = (1, 5, 50, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import chain
    return chain({"model.prior": ["standard_normal"]},
                 {"model.prior": ["vampprior"], "model.prior_components": [50, 500]})
