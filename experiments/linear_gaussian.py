"""The exact-likelihood sanity model: a linear-Gaussian VAE on the embedded digits (no download).

Decoder x = z W + b + N(0, sigma^2 I), z ~ N(0, I), so log p(x) = log N(x; b, W^T W + sigma^2 I) is exact;
the encoder is linear too. The report shows that exact log p(x) next to the ELBO and IWAE_K bounds:
ELBO <= IWAE_5 <= IWAE_50 <= IWAE_1000 <= log p(x), with the gap closing as K grows.

    python -m jaxvae.main --config=experiments/linear_gaussian.py --workdir=runs/linear_gaussian
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "linear_gaussian"
    c.data.name = "digits"
    c.data.binarize = "none"
    c.model.latent_dim = 8
    c.model.encoder_hidden = ()
    c.model.decoder_hidden = ()
    c.model.likelihood = "gaussian"
    c.model.obs_variance = 0.05
    c.model.decoder_output_act = "identity"
    c.objective.name = "elbo"
    c.objective.k = 1
    c.train.batch_size = 50
    c.train.num_epochs = 100
    c.train.learning_rate = 3e-3
    c.train.eval_every_epochs = 25
    c.eval.ks = (1, 5, 50, 1000)
    return c


def get_sweep():
    return [{"objective.name": "elbo", "objective.k": 1}, {"objective.name": "iwae", "objective.k": 5}]
