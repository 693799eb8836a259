"""beta-VAE (Higgins et al. 2017): minimise -(E_q log p(x|z) - beta KL(q(z|x)||p(z))) for a beta grid.

Reported bounds are always the beta = 1 ELBO / IWAE bounds, so runs with different beta compare on
the same scale; the pictures include latent traversals (traversals.png), where larger beta should
give fewer active units and more separated factors.

    ./launch.sh experiments/beta_vae.py --config.train.num_epochs=5
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "beta_vae"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 10
    c.model.encoder_hidden = (400, 200)
    c.model.decoder_hidden = (200, 400)
    c.model.activation = "relu"
    c.objective.name = "elbo"
    c.objective.beta = 4.0
    c.train.batch_size = 100
    c.train.num_epochs = 50
    c.eval.ks = (1, 50, 1000)
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"objective.beta": [0.5, 1.0, 2.0, 4.0, 8.0]})
