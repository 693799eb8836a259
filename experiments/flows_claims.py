"""Flow posteriors past 5 passes (issue 28 item 2): the Gaussian posterior, planar L=8, IAF L=4 and
triangular / Householder Sylvester L=4, each with ``experiments/flows_mnist.py``'s settings (784-400-40 tanh
MLPs, single-sample ELBO, batch 100, Adam 1e-3, flow head scale 0.1), 30 passes (``train.budget=0.3`` of
its 100), 2 seeds, NLL = -IWAE_5000 and the ELBO on the same 2000 test images for every run.

    ./launch.sh experiments/flows_claims.py --root runs/claims --config.data.manual_dir=../shared/data
    python -m jaxvae.sweeps.report runs/claims/flows_claims

The 5-pass table these extend is in benchmarks/README.md ("Flows and learned priors"); the VampPrior half
is ``experiments/vampprior_claims.py``.
"""

from pathlib import Path

from jaxvae.sweeps.plan import load_module

flows_mnist = load_module(str(Path(__file__).with_name("flows_mnist.py")))


def get_config():
    c = flows_mnist.get_config()
    c.name = "flows_claims"
    c.train.budget = 0.3  # 30 of flow_mnist_config's 100 passes
    c.eval.max_examples = 2000  # the runner's fixed subset: the same 2000 test images in every run
    c.eval.ks = (1, 5000)
    return c


def get_sweep():
    from jaxvae.sweeps import chain, product

    posteriors = chain(
        {"model.flow": ["none"], "model.flow_length": [0]},
        {"model.flow": ["planar"], "model.flow_length": [8]},
        {"model.flow": ["iaf"], "model.flow_length": [4]},
        product({"model.flow": ["sylvester"], "model.flow_length": [4]},
                {"model.flow_options.variant": ["triangular", "householder"]}),
    )
    return product(posteriors, {"seed": [0, 1]})
