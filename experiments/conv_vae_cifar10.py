"""Convolutional VAE on CIFAR-10 (32x32x3, 8-bit): ELBO vs IWAE (K=5), residual conv nets, a per-pixel
mixture of discretized logistics (Salimans et al. 2017), results in nats and bits/dim.

Encoder: 3x3 convs of 64 and 128 channels, stride 2 each (32 -> 16 -> 8), each followed by a pre-activation
residual block with GroupNorm, then a Dense head to a 128-d Gaussian; the decoder mirrors it (Dense to
8x8x128, transposed convs back to 32x32) and outputs, per pixel, 5 mixture components (means, log-scales,
RGB coupling coefficients, weights). A small model: anchors for context are IAF-VAE 3.11 bits/dim (Kingma
et al. 2016) and NVAE 2.91 (Vahdat & Kautz 2020); see docs/images.md for what this one reaches.
Needs cifar-10-python.tar.gz (manual_dir or download).

    ./launch.sh experiments/conv_vae_cifar10.py --config.data.manual_dir=/path/with/tarball
    python -m jaxvae.main --config=experiments/conv_vae_cifar10.py --workdir=runs/cifar_iwae5 --config.train.budget=0.1
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "conv_vae_cifar10"
    c.data.name = "cifar10"
    c.model.latent_dim = 128
    c.model.network = "resnet"
    c.model.conv_widths = (64, 128)
    c.model.conv_strides = (2, 2)
    c.model.conv_kernel = 3
    c.model.normalization = "group"
    c.model.activation = "elu"
    c.model.likelihood = "discretized_logistic_mixture"
    c.model.num_mixtures = 5
    c.objective.name = "iwae"
    c.objective.k = 5
    c.train.batch_size = 64
    c.train.num_epochs = 100
    c.train.learning_rate = 1e-3
    c.train.grad_clip_norm = 100.0  # the mixture's early gradients are large (PixelCNN++ practice)
    c.train.log_every_steps = 500
    c.train.eval_every_epochs = 10
    c.eval.ks = (1, 5, 100, 1000)  # K=1000 for the NLL: a conv decoder makes K=5000 ~5x the training cost
    c.eval.batch_size = 50
    c.eval.chunk_size = 50
    c.eval.valid_k = 5
    c.eval.valid_examples = 1000
    return c


def get_sweep():
    from jaxvae.sweeps import zipped
    return zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]})
