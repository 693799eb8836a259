"""Flow posteriors on binarized MNIST (Rezende & Mohamed 2015): q_L(z) with L planar flows.

The flow's parameters are output by the encoder (amortized); log q_L(z_L) = log q_0(z_0) -
sum_k log|det df_k/dz_{k-1}| enters the ELBO with a Monte Carlo KL. The sweep over the flow length
L in {0, 10, 20, 40, 80} gives the report's NLL-vs-flow-length plot.

    ./launch.sh experiments/planar_flow_mnist.py --config.train.budget=0.01
"""

from jaxvae.experiment.configs import flow_mnist_config


def get_config():
    c = flow_mnist_config()  # 784-400-40 tanh MLPs, batch 100, Adam 1e-3, clip 100, 100 passes
    c.name = "planar_flow_mnist"
    c.model.flow = "planar"
    c.model.flow_length = 10
    c.model.amortized_flow = True
    c.model.flow_options.head_scale = 0.1  # the flow head learns 10x slower than the rest: with 1.0 planar
    # flows lose to the Gaussian posterior (benchmarks/README.md, "Flows"); runs before this line used 1.0
    c.objective.kl_warmup_steps = 10000  # Rezende & Mohamed anneal the KL term early in training
    return c


def get_sweep():
    from jaxvae.sweeps import product
    return product({"model.flow_length": [0, 10, 20, 40, 80]})
