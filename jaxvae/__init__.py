"""jaxvae: VAEs, IWAE bounds and flow posteriors as pure JAX functions, with an experiment runner.

The public surface (docs/api.md)::

    import jaxvae
    run = jaxvae.load_run("runs/quickstart/...")          # config, model, params; encode/sample/bounds
    jaxvae.VAE, jaxvae.make_loss_fn, jaxvae.iwae_bound    # the maths (jaxvae.vae)
    @jaxvae.register_objective("name") / register_prior / register_flow / register_likelihood

Layers: ``jaxvae.vae`` (maths) <- ``jaxvae.experiment`` (runner) <- ``jaxvae.sweeps`` (launcher, report);
``jaxvae.data`` feeds the runner. Attributes load lazily, so ``from jaxvae.sweeps import product`` in an
experiment file stays import-light.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    # registries (jaxvae/vae/registry.py)
    "register_objective": "jaxvae.vae.registry", "register_prior": "jaxvae.vae.registry",
    "register_flow": "jaxvae.vae.registry", "register_likelihood": "jaxvae.vae.registry",
    "OBJECTIVES": "jaxvae.vae.registry", "PRIORS": "jaxvae.vae.registry", "FLOWS": "jaxvae.vae.registry",
    "LIKELIHOODS": "jaxvae.vae.registry",
    # the model and its parts
    "VAE": "jaxvae.vae.model", "Posterior": "jaxvae.vae.model",
    "StandardNormal": "jaxvae.vae.priors",
    "Bernoulli": "jaxvae.vae.likelihoods", "GaussianFixed": "jaxvae.vae.likelihoods",
    "GaussianLearned": "jaxvae.vae.likelihoods",
    "Planar": "jaxvae.vae.flows", "Radial": "jaxvae.vae.flows",
    # objectives and estimators
    "make_loss_fn": "jaxvae.vae.objectives", "elbo_terms": "jaxvae.vae.objectives",
    "iwae_bound": "jaxvae.vae.objectives", "log_weights": "jaxvae.vae.objectives",
    "log_mean_exp": "jaxvae.vae.estimators",
    "iwae_bound_chunked": "jaxvae.vae.evaluation", "active_units": "jaxvae.vae.evaluation",
    "elbo_surgery": "jaxvae.vae.evaluation",
    # runs
    "load_run": "jaxvae.experiment.run", "Run": "jaxvae.experiment.run", "RunNotFound": "jaxvae.experiment.run",
    "base_config": "jaxvae.experiment.configs", "train_and_evaluate": "jaxvae.experiment.runner",
    "load_dataset": "jaxvae.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
