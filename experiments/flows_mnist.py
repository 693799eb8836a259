"""Richer posteriors on statically binarized MNIST: planar, IAF and Sylvester (orthogonal, Householder,
triangular) flows of length L in {4, 8, 16}, plus the Gaussian posterior (L = 0) as the baseline.

Encoder and decoder are one-hidden-layer MLPs (van den Berg et al. 2018 use gated convolutional nets,
so their numbers are not expected here). No KL warm-up by default: at the budgets this CPU allows a
10000-step warm-up covers most of the run (benchmarks/README.md, "Flows" section).

    ./launch.sh experiments/flows_mnist.py --config.train.budget=0.05 --config.eval.max_examples=1000
"""

from jaxvae.experiment.configs import flow_mnist_config


def get_config():
    c = flow_mnist_config()  # 784-400-40 tanh MLPs, batch 100, Adam 1e-3, clip 100, 100 passes
    c.name = "flows_mnist"
    c.model.flow = "sylvester"
    c.model.flow_length = 4
    c.model.amortized_flow = True
    # the options of every flow of the sweep (each flow reads its own: jaxvae.vae.flows)
    c.model.flow_options.head_scale = 0.1  # the flow head learns 10x slower than the rest: with 1.0 planar
    # and Sylvester flows lose to the Gaussian posterior (benchmarks/README.md, "Flows"); runs before used 1.0
    c.model.flow_options.hidden = (320,)  # IAF: MADE hidden widths (one layer of 320)
    c.model.flow_options.context = 16  # IAF: per-example context from the encoder
    c.model.flow_options.variant = "orthogonal"  # Sylvester
    c.model.flow_options.columns = 0  # full Q (D = 40 columns)
    c.model.flow_options.reflections = 4
    c.objective.analytic_kl = True  # used only by the Gaussian baseline
    c.objective.kl_warmup_steps = 0
    return c


def get_sweep():
    from jaxvae.sweeps import chain, product
    lengths = {"model.flow_length": [4, 8, 16]}
    return chain(
        {"model.flow": ["none"], "model.flow_length": [0]},
        product({"model.flow": ["planar", "iaf"]}, lengths),
        product({"model.flow": ["sylvester"],
                 "model.flow_options.variant": ["orthogonal", "householder", "triangular"]}, lengths),
    )
