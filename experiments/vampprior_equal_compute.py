"""Does the VampPrior buy more than its cost? (issue 28 item 2): the standard normal prior of
``experiments/vampprior_claims.py`` (the same 784-300-300-40 network, learning rate and KL estimator
as its ``prior=standard_normal`` runs) trained for 48 passes instead of 30, the compute of the
VampPrior with K=50 pseudo-inputs (1.61x the step cost, measured in ``runs/claims/vampprior_claims``), 2 seeds,
evaluated on the same 2000 test images (NLL = -IWAE_5000, the test ELBO).

    ./launch.sh experiments/vampprior_equal_compute.py --root runs/claims --vectorize 2 \\
        --config.data.manual_dir=../shared/data
    python -m jaxvae.sweeps.report runs/claims/vampprior_equal_compute

The schedule is constant, so the first 30 passes of this run are the 30-pass run. K=500's cost would need
several hundred passes and is left out.
"""

from pathlib import Path

from jaxvae.sweeps.plan import load_module

vampprior_claims = load_module(str(Path(__file__).with_name("vampprior_claims.py")))

EQUAL_COMPUTE_PASSES = 48  # 30 passes x VampPrior K=50's measured 1.61x step cost


def get_config():
    c = vampprior_claims.get_config()
    c.name = "vampprior_equal_compute"
    c.model.prior = "standard_normal"
    c.train.budget = EQUAL_COMPUTE_PASSES / 100  # of the experiment's 100 passes
    return c


def get_sweep():
    return [{"seed": s} for s in (0, 1)]
