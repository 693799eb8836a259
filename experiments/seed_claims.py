"""The write-up's closing claims, measured on ``factors_toy`` (8x8 images with known brightness, centre-edge
contrast and bar orientation; generated, no download):

(a) sample quality vs reconstruction is a trade-off set by the KL weight: the rate-distortion plane of a
    beta sweep (Alemi et al. 2018), R = E KL(q(z|x)||p(z)), D = -E log p(x|z), with lines R + D = const;
(b) beta-VAEs capture disentangled factors: MIG (Chen et al. 2018) and DCI (Eastwood & Williams 2018) of
    the encoder means against the true factors, vs beta;
(c) one latent controls brightness and another the centre-edge contrast: which latent has the largest
    mutual information with each factor (results.json: test.disentanglement.mig_latent), and traversals.

beta in {0.25, 0.5, 1, 2, 4, 8} x latent_dim in {2, 10} x seeds {0, 1, 2}: 36 small runs.

    ./launch.sh experiments/seed_claims.py --parallel 2
    python -m jaxvae.sweeps.report runs/seed_claims

Findings: docs/claims.md.
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "seed_claims"
    c.data.name = "factors_toy"
    c.model.latent_dim = 2
    c.model.encoder_hidden = (128, 64)
    c.model.decoder_hidden = (64, 128)
    c.model.activation = "relu"
    c.model.likelihood = "gaussian"
    c.model.obs_variance = 0.01  # sigma = 0.1: 5x the data's pixel noise (0.02)
    c.model.decoder_output_act = "sigmoid"
    c.objective.name = "elbo"
    c.objective.beta = 1.0
    c.train.batch_size = 100
    c.train.num_epochs = 40
    c.train.learning_rate = 2e-3
    c.train.log_every_steps = 400
    c.train.eval_every_epochs = 0
    c.train.checkpoint_every_epochs = 0
    c.eval.ks = (1, 50)
    c.eval.valid_k = 50
    c.eval.surgery_samples = 10
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"objective.beta": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "model.latent_dim": [2, 10],
                    "seed": [0, 1, 2]})
