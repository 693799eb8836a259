"""Do the flows buy more than their cost? (issue 28 item 2): the Gaussian posterior of
``experiments/flows_claims.py`` trained for as many more passes as a flow's step costs more, so that it gets
the flow's compute: 54 passes (planar L=8's 1.79x of 30) and 63 passes (IAF L=4's 2.09x), 2 seeds each,
evaluated on the same 2000 test images (NLL = -IWAE_5000, the test ELBO).

    ./launch.sh experiments/flows_equal_compute.py --root runs/claims --vectorize 2 \\
        --config.data.manual_dir=../shared/data
    python -m jaxvae.sweeps.report runs/claims/flows_equal_compute

The cost ratios are the flows' training-step costs measured in ``runs/claims/flows_claims`` (docs/flows.md);
triangular Sylvester's 13.85x would need 415 passes and is left out. The learning rate and its schedule
are those of flows_claims at every budget (the schedule is constant, so the first 30 passes of a longer
run are the 30-pass run).
"""

from pathlib import Path

from jaxvae.sweeps.plan import load_module

flows_claims = load_module(str(Path(__file__).with_name("flows_claims.py")))

EQUAL_COMPUTE_PASSES = {"planar L=8": 54, "iaf L=4": 63}  # 30 passes x the flow's measured step cost


def get_config():
    c = flows_claims.get_config()
    c.name = "flows_equal_compute"
    c.model.flow = "none"  # the Gaussian posterior (flows_claims' config itself names a flow: its sweep sets each)
    c.model.flow_length = 0
    return c


def get_sweep():
    from jaxvae.sweeps import product

    budgets = sorted(passes / 100 for passes in EQUAL_COMPUTE_PASSES.values())  # of the experiment's 100
    return product({"train.budget": budgets}, {"seed": [0, 1]})
