"""End-to-end benchmark experiment for vectorized sweeps: 8 seeds of the IWAE-paper MLP on binarized MNIST
(batch 20, constant learning rate), each run a whole job (process start, data, compile, training,
validation, test evaluation). Build the TFDS dataset once first (any run does it, e.g. `--only 0` into a
scratch root), so that neither timing includes it; then time it both ways (benchmarks/README.md,
"Vectorized sweeps"):

    time ./launch.sh benchmarks/seeds_mnist.py --root /tmp/seq --no-vectorize --no-report \\
        --config.data.manual_dir=../shared/data --config.train.num_epochs=1
    time ./launch.sh benchmarks/seeds_mnist.py --root /tmp/vec --vectorize 8 --no-report \\
        --config.data.manual_dir=../shared/data --config.train.num_epochs=1
"""

from jaxvae.configs import base_config


def get_config():
    c = base_config()
    c.name = "seeds_mnist"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 50
    c.model.encoder_hidden = (200, 200)
    c.model.decoder_hidden = (200, 200)
    c.objective.name = "elbo"
    c.objective.k = 1
    c.train.batch_size = 20
    c.train.num_epochs = 1
    c.train.learning_rate = 1e-3
    c.train.adam_b1, c.train.adam_b2, c.train.adam_eps = 0.9, 0.999, 1e-4
    c.train.log_every_steps = 2500
    c.eval.ks = (1, 5, 50)
    c.eval.valid_k = 50
    c.eval.valid_examples = 1000
    c.eval.max_examples = 1000
    c.eval.images = False
    return c


def get_sweep():
    from jaxvae.sweep import product
    return product({"seed": list(range(8))})
