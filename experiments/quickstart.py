"""Quick start: a real VAE on the embedded scikit-learn digits (8x8, no download), about a minute on CPU.

Trains with the ELBO and with the IWAE bound (K=5) side by side (the sweep below) and compares their
test ELBO and IWAE bounds:

    ./launch.sh experiments/quickstart.py && python -m jaxvae.sweeps.report runs/quickstart
    python -m jaxvae.main --config=experiments/quickstart.py --workdir=runs/quickstart/one
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "quickstart"
    c.data.name = "digits"
    c.data.binarize = "dynamic"
    c.model.latent_dim = 8
    c.model.encoder_hidden = (128, 128)
    c.model.decoder_hidden = (128, 128)
    c.objective.name = "iwae"
    c.objective.k = 5
    c.train.batch_size = 50
    c.train.num_epochs = 150
    c.train.learning_rate = 3e-3
    c.train.log_every_steps = 300
    c.train.eval_every_epochs = 25
    c.train.checkpoint_every_epochs = 25
    c.eval.ks = (1, 5, 50, 1000)
    return c


def get_sweep():
    """Each point is a dict of overrides (dotted config paths); one run per point."""
    return [
        {"objective.name": "elbo", "objective.k": 1},
        {"objective.name": "iwae", "objective.k": 5},
    ]
