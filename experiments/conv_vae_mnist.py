"""Convolutional VAE on statically binarized MNIST (28x28x1): ELBO vs IWAE (K=5), Bernoulli likelihood.

Encoder: 3x3 convs of 32 and 64 channels, stride 2 (28 -> 14 -> 7), ReLU, Dense to a 32-d Gaussian;
decoder: Dense to 7x7x64, transposed convs back to 28x28, one logit per pixel (output bias = the training
pixels' log-odds). Evaluation as in experiments/iwae_mnist.py (K up to 5000; bits/dim = NLL / (784 ln 2)
per binary pixel in results.json).

    ./launch.sh experiments/conv_vae_mnist.py --config.data.manual_dir=/work/shared/data

Reduced budget of benchmarks/README.md and docs/images.md (2 epochs, widths (16, 32), bounds on the first
200 test images, ~6 min (ELBO) and ~30 min (IWAE) on a shared 2-core CPU):

    ./launch.sh experiments/conv_vae_mnist.py --parallel 2 --no-vectorize \
      --config.data.manual_dir=/work/shared/data --config.model.conv_widths='(16,32)' \
      --config.train.budget=0.04 --config.train.eval_every_epochs=0 --config.eval.ks='(1,5,50,5000)' \
      --config.eval.max_examples=200 --config.eval.valid_k=5 --config.eval.valid_examples=500 \
      --config.eval.images=False
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "conv_vae_mnist"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 32
    c.model.network = "conv"
    c.model.conv_widths = (32, 64)
    c.model.conv_strides = (2, 2)
    c.model.activation = "relu"
    c.model.likelihood = "bernoulli"
    c.objective.name = "iwae"
    c.objective.k = 5
    c.train.batch_size = 100
    c.train.num_epochs = 50
    c.train.learning_rate = 1e-3
    c.train.log_every_steps = 500
    c.train.eval_every_epochs = 5
    c.eval.ks = (1, 5, 50, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import zipped
    return zipped({"objective.name": ["elbo", "iwae"], "objective.k": [1, 5]})
