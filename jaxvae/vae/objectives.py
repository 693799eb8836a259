"""Variational objectives and their gradient estimators, as pure functions of (params, x, key).

Per-example quantities have shape (batch,); a ``*_loss`` function returns the scalar to minimise
(minus the batch-mean bound) and a dict of batch-mean metrics. ``make_loss_fn`` resolves ``objective.name``
in the registry: this module's objectives and tighter.py's (imported here to register them; tighter.py and
this module share estimators.py, so tighter.py imports nothing from here).

References: Kingma & Welling 2014 (ELBO, reparameterization); Higgins et al. 2017 (beta-VAE);
Burda, Grosse & Salakhutdinov 2015 (IWAE); Roeder, Wu & Duvenaud 2017 ("sticking the landing");
Tucker, Lawson, Gu & Maddison 2018 (DReG).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from jaxvae.vae import tighter as _tighter  # noqa: F401 - registers the tighter bounds (MIWAE, CIWAE, PIWAE, RWS)
from jaxvae.vae.estimators import check_path_estimator, log_mean_exp
from jaxvae.vae.model import VAE, Params, Posterior
from jaxvae.vae.registry import OBJECTIVES, register_objective


def log_weights_from_posterior(model: VAE, params: Params, x: jax.Array, post: Posterior,
                               key: jax.Array, num_samples: int, stop_q_grad: bool = False):
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) for K = ``num_samples`` draws z_k ~ q(z|x).

    ``jax.vmap`` over the K sample keys; each z_k is decoded and scored (the same z_k in all three
    terms). Returns (log_w of shape (K, batch), z of shape (K, batch, d)).
    """

    def one(k):
        z, log_q, _ = model.sample_posterior(post, k, stop_q_grad)
        return model.log_joint(params, x, z) - log_q, z

    return jax.vmap(one)(jax.random.split(key, num_samples))


def log_weights(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int,
                stop_q_grad: bool = False) -> jax.Array:
    """The (K, batch) matrix of log importance weights log p(x, z_k) - log q(z_k|x)."""
    post = model.encode(params, x)
    return log_weights_from_posterior(model, params, x, post, key, num_samples, stop_q_grad)[0]


def iwae_bound(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """Per-example L_K = log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) i.i.d. (Burda et al. 2015).

    E[L_K] <= E[L_{K+1}] <= log p(x), and L_1 is the single-sample ELBO.
    """
    return log_mean_exp(log_weights(model, params, x, key, num_samples))


def elbo_terms(model: VAE, params: Params, x: jax.Array, key: jax.Array, num_samples: int = 1,
               analytic_kl: bool = True, stop_q_grad: bool = False) -> dict[str, jax.Array]:
    """Per-example ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), with S = ``num_samples`` draws.

    The KL is analytic when the model has a closed form (a plain Gaussian q and N(0, I) prior:
    1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2)) and ``analytic_kl``; otherwise the Monte Carlo estimate
    mean_s [log q(z_s|x) - log p(z_s)].
    """
    post = model.encode(params, x)

    def one(k):
        z, log_q, _ = model.sample_posterior(post, k, stop_q_grad)
        return model.log_likelihood(params, x, z), log_q - model.log_prior(params, z)

    rec, kl_mc = jax.vmap(one)(jax.random.split(key, num_samples))
    rec = rec.mean(0)
    kl = model.analytic_kl(params, post) if analytic_kl and not stop_q_grad else None
    if kl is None:
        kl = kl_mc.mean(0)
    return {"reconstruction": rec, "kl": kl, "elbo": rec - kl}


def elbo_loss(model: VAE, params: Params, x: jax.Array, key: jax.Array, *, beta=1.0,
              num_samples: int = 1, analytic_kl: bool = True, stl: bool = False):
    """Minimise -mean[E_q log p(x|z) - beta KL]; beta != 1 is the beta-VAE (Higgins et al. 2017).

    ``stl``: "sticking the landing" (Roeder et al. 2017): the score term of log q is dropped by
    holding q's parameters fixed inside log q, leaving an unbiased, lower-variance path gradient.
    """
    if stl:
        check_path_estimator(model, "elbo_stl")
    t = elbo_terms(model, params, x, key, num_samples, analytic_kl, stop_q_grad=stl)
    objective = t["reconstruction"] - beta * t["kl"]
    metrics = {k: v.mean() for k, v in t.items()}
    return -objective.mean(), metrics


def iwae_loss(model: VAE, params: Params, x: jax.Array, key: jax.Array, *, num_samples: int, beta=1.0):
    """Minimise -mean L_K; its gradient is the standard reparameterized IWAE estimator
    sum_k w~_k grad log w_k with normalised weights w~_k = w_k / sum_j w_j.

    ``beta`` (KL warm-up) tempers the prior-and-posterior part: log w_k^beta =
    log p(x|z_k) + beta (log p(z_k) - log q(z_k|x)); beta = 1 is the IWAE bound.
    """
    post = model.encode(params, x)

    def one(k):
        z, log_q, _ = model.sample_posterior(post, k)
        ll = model.log_likelihood(params, x, z)
        return ll, model.log_prior(params, z) - log_q

    ll, log_ratio = jax.vmap(one)(jax.random.split(key, num_samples))
    bound = log_mean_exp(ll + log_ratio)
    tempered = log_mean_exp(ll + beta * log_ratio)
    return -tempered.mean(), {"iwae": bound.mean()}


def iwae_dreg_loss(model: VAE, params: Params, x: jax.Array, key: jax.Array, *, num_samples: int):
    """IWAE bound with the doubly-reparameterized gradient (DReG, Tucker et al. 2018).

    Decoder (theta):  sum_k w~_k grad_theta log w_k                 (the standard estimator);
    encoder (phi):    sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi), with log q's parameters fixed.
    Implemented as a surrogate whose value is -L_K and whose gradient is the DReG estimator:
    one encoder pass, the decoder once with its parameters stopped (phi term) and once with the
    samples stopped (theta term).
    """
    check_path_estimator(model, "iwae_dreg")
    post = model.encode(params, x)

    def one(k):
        z, log_q, _ = model.sample_posterior(post, k, stop_q_grad=True)
        phi_term = model.log_joint(sg(params), x, z) - log_q
        theta_term = model.log_joint(params, x, sg(z)) - sg(log_q)
        return phi_term, theta_term

    log_w_phi, log_w_theta = jax.vmap(one)(jax.random.split(key, num_samples))
    w_tilde = sg(jax.nn.softmax(log_w_phi, axis=0))
    surrogate = jnp.sum(jnp.square(w_tilde) * log_w_phi + w_tilde * log_w_theta, axis=0)
    bound = log_mean_exp(sg(log_w_phi))
    objective = bound + surrogate - sg(surrogate)
    return -objective.mean(), {"iwae": bound.mean()}


# -- the registry: objective.name -> (model, params, x, key, **options) -> (loss, metrics) ------------
# Options are the config's objective.* fields (k, beta, analytic_kl, ... and objective.options.*); each
# objective takes what it needs and ignores the rest (**_).


@register_objective("elbo")
def elbo(model: VAE, params: Params, x, key, *, k: int = 1, beta=1.0, analytic_kl: bool = True, **_):
    """The (beta-)ELBO with k samples, reparameterized gradient (Kingma & Welling 2014)."""
    return elbo_loss(model, params, x, key, beta=beta, num_samples=k, analytic_kl=analytic_kl)


@register_objective("elbo_stl")
def elbo_stl(model: VAE, params: Params, x, key, *, k: int = 1, beta=1.0, **_):
    """The ELBO with the "sticking the landing" gradient (Roeder et al. 2017)."""
    return elbo_loss(model, params, x, key, beta=beta, num_samples=k, stl=True)


@register_objective("iwae")
def iwae(model: VAE, params: Params, x, key, *, k: int = 1, beta=1.0, **_):
    """IWAE_k with the standard reparameterized gradient (Burda et al. 2015)."""
    return iwae_loss(model, params, x, key, num_samples=k, beta=beta)


@register_objective("iwae_dreg")
def iwae_dreg(model: VAE, params: Params, x, key, *, k: int = 1, **_):
    """IWAE_k with the doubly reparameterized gradient (Tucker et al. 2018)."""
    return iwae_dreg_loss(model, params, x, key, num_samples=k)


def make_loss_fn(model: VAE, name: str, **options):
    """The loss ``(params, x, key, beta) -> (loss, metrics)`` of the registered objective ``name``.

    ``options`` (e.g. ``k``, ``analytic_kl``; ``num_samples`` is accepted as a synonym of ``k``) are
    bound now; ``beta`` is an argument (not a constant) so that warm-up schedules and vectorized sweeps
    over beta trace one program.
    """
    fn = OBJECTIVES.get(name)
    if "num_samples" in options:
        options["k"] = options.pop("num_samples")

    def loss_fn(params, x, key, beta=1.0):
        return fn(model, params, x, key, beta=beta, **options)

    return loss_fn


def objective_options(objective_config) -> dict:
    """The options an objective gets from the config: every objective.* field but name, beta (traced)
    and kl_warmup_steps, with the fields of objective.options (custom objectives) merged in."""
    d = dict(objective_config.to_dict() if hasattr(objective_config, "to_dict") else objective_config)
    extra = d.pop("options", None) or {}
    for skip in ("name", "beta", "kl_warmup_steps"):
        d.pop(skip, None)
    return {**d, **dict(extra)}
