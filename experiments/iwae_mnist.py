"""IWAE on statically binarized MNIST (Burda, Grosse & Salakhutdinov 2015), one stochastic layer.

784-200-200-50 tanh encoder, symmetric decoder, Bernoulli likelihood; Adam(0.9, 0.999, eps=1e-4), batch
20, 3^i passes at learning rate 1e-3 * 10^(-i/7) for i = 0..7 (3280 passes; ``train.budget`` scales it:
budget=0.01 is 32.8 passes). Decoder output bias = the training pixels' log-odds. Evaluation: ELBO and
IWAE_K for K = 1, 5, 50, 5000 on all 10000 test images (K = 5000 is the NLL estimate).

    ./launch.sh experiments/iwae_mnist.py --config.train.budget=0.01
    python -m jaxvae.main --config=experiments/iwae_mnist.py --workdir=runs/iwae_k50 --config.objective.k=50
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "iwae_mnist"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 50
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.model.activation = "tanh"
    c.model.likelihood = "bernoulli"
    c.objective.name = "iwae"
    c.objective.k = 50
    c.train.batch_size = 20
    c.train.schedule = "iwae"
    c.train.learning_rate = 1e-3
    c.train.adam_b1, c.train.adam_b2, c.train.adam_eps = 0.9, 0.999, 1e-4
    c.train.log_every_steps = 5000
    c.train.eval_every_epochs = 10
    c.train.checkpoint_every_epochs = 1
    c.eval.ks = (1, 5, 50, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"objective.k": [1, 5, 50]})
