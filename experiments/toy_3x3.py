"""The worked example: 3x3 images, a 2-d latent, Gaussian decoder with sigma^2 = 0.1, its toy networks.

Encoder 9 -> 6 (ReLU) -> 4, split into mu and log sigma^2 in R^2; decoder 2 -> 4 (ReLU) -> 9 (sigmoid).
Data: noisy 3x3 bars and diagonals (``data.name = "toy_3x3"``, generated, no download). With a 2-d latent
the run also draws the decoded manifold and the test set's encoded means coloured by pattern.
``python -m jaxvae.toy`` prints the example's hand calculation through the library's functions.

    python -m jaxvae.main --config=experiments/toy_3x3.py --workdir=runs/toy_3x3
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "toy_3x3"
    c.data.name = "toy_3x3"
    c.model.latent_dim = 2
    c.model.encoder_hidden = (6,)
    c.model.decoder_hidden = (4,)
    c.model.activation = "relu"
    c.model.likelihood = "gaussian"
    c.model.obs_variance = 0.1
    c.model.decoder_output_act = "sigmoid"
    c.objective.name = "elbo"
    c.objective.k = 1
    c.train.batch_size = 16
    c.train.num_epochs = 300
    c.train.learning_rate = 1e-2
    c.train.log_every_steps = 1000
    c.train.eval_every_epochs = 100
    c.train.checkpoint_every_epochs = 100
    c.eval.ks = (1, 5, 50, 1000)
    c.eval.valid_k = 50
    return c
