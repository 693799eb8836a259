"""Flow posteriors on binarized MNIST (Rezende & Mohamed 2015): q_L(z) with L planar flows.

The flow's parameters are output by the encoder (amortized); log q_L(z_L) = log q_0(z_0) -
sum_k log|det df_k/dz_{k-1}| enters the ELBO with a Monte Carlo KL. The sweep over the flow length
L in {0, 10, 20, 40, 80} gives the report's NLL-vs-flow-length plot.

    ./launch.sh experiments/planar_flow_mnist.py --config.train.budget=0.01
"""

from jaxvae.experiment.configs import base_config


def get_config():
    c = base_config()
    c.name = "planar_flow_mnist"
    c.data.name = "binarized_mnist"
    c.model.latent_dim = 40
    c.model.encoder_hidden = (400,)
    c.model.decoder_hidden = (400,)
    c.model.activation = "tanh"
    c.model.flow = "planar"
    c.model.flow_length = 10
    c.model.amortized_flow = True
    c.objective.name = "elbo"
    c.objective.k = 1
    c.objective.kl_warmup_steps = 10000  # Rezende & Mohamed anneal the KL term early in training
    c.train.batch_size = 100
    c.train.schedule = "constant"
    c.train.num_epochs = 100
    c.train.learning_rate = 1e-3
    c.train.grad_clip_norm = 100.0
    c.train.log_every_steps = 5000
    c.train.eval_every_epochs = 10
    c.eval.ks = (1, 5, 50, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"model.flow_length": [0, 10, 20, 40, 80]})
