"""Bounds beyond IWAE and their estimators: MIWAE, CIWAE, PIWAE and reweighted wake-sleep (RWS).

All are computed from one batch of T = M x K draws z_i ~ q(z|x) with log weights
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) (``jax.vmap`` over the draws):

    MIWAE(M, K) = 1/M sum_m log 1/K sum_k w_{m,k}      (mean of M independent IWAE_K bounds)
    CIWAE(b)    = b ELBO_K + (1 - b) IWAE_K             (ELBO_K = 1/K sum_k log w_k, same K draws)
    PIWAE(M, K): decoder (theta) follows grad IWAE_{MK}, encoder (phi) follows grad MIWAE(M, K)
    RWS:         wake-theta = grad_theta IWAE_K; wake-phi = sum_k w~_k grad_phi log q(z_k|x), z_k held fixed

References: Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh 2018, "Tighter variational bounds are
not necessarily better" (MIWAE, CIWAE, PIWAE); Bornschein & Bengio 2015 (reweighted wake-sleep);
Le, Kosiorek, Siddharth, Teh & Wood 2019 ("Revisiting reweighted wake-sleep"); Tucker, Lawson, Gu &
Maddison 2018 (DReG, and its form of the wake-phi gradient).

Estimators that give the encoder and decoder different gradients are surrogate losses: their value is
minus the reported bound, their ``jax.grad`` the documented estimator (weights are held fixed with
stop_gradient; the theta term sees the draws z stopped, the phi term the decoder's parameters stopped).
The two terms evaluate the decoder at the same z; XLA computes that forward pass once (common
subexpression), see benchmarks/README.md for the measured cost per step.

``beta`` (the KL warm-up weight) tempers every log weight as in ``iwae_loss``:
log w^beta = log p(x|z) + beta (log p(z) - log q(z|x)); beta = 1 gives the bounds above.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.lax import stop_gradient as sg

from jaxvae.vae import distributions as D
from jaxvae.vae.estimators import check_path_estimator, log_mean_exp
from jaxvae.vae.model import VAE, Params
from jaxvae.vae.registry import register_objective


def _draws(model: VAE, params: Params, x: jax.Array, key: jax.Array, n: int, stop_q_grad: bool = False):
    """n draws per example, the same keys as ``iwae_loss`` (``jax.random.split(key, n)``), so that for equal
    n these are the samples IWAE_n and the n-sample ELBO use. Returns (post, z, log_q, z0), leading axis n."""
    post = model.encode(params, x)
    z, log_q, z0 = jax.vmap(lambda k: model.sample_posterior(post, k, stop_q_grad))(jax.random.split(key, n))
    return post, z, log_q, z0


def _log_w(model: VAE, params: Params, x: jax.Array, z: jax.Array, log_q: jax.Array, beta=1.0):
    """(untempered, tempered) log weights of the (n, batch, d) draws z: each z_i decoded once."""
    ll = jax.vmap(lambda zi: model.log_likelihood(params, x, zi))(z)
    ratio = jax.vmap(lambda zi: model.log_prior(params, zi))(z) - log_q
    return ll + ratio, ll + beta * ratio


def miwae_bound(log_w: jax.Array, m: int) -> jax.Array:
    """Per-example MIWAE(M, K) = 1/M sum_m log 1/K sum_k w_{m,k} from (M*K, batch) log weights, the
    draws grouped in order (group m = rows m*K .. m*K + K - 1)."""
    return log_mean_exp(log_w.reshape(m, -1, log_w.shape[-1]), axis=1).mean(0)


def _group_weights(log_w: jax.Array, m: int) -> jax.Array:
    """d MIWAE / d log w_i = w_i / (M sum_{j in group(i)} w_j), shape (M*K, batch)."""
    grouped = log_w.reshape(m, -1, log_w.shape[-1])
    return (jax.nn.softmax(grouped, axis=1) / m).reshape(log_w.shape)


def miwae_loss(model: VAE, params: Params, x, key, *, m: int, k: int, beta=1.0):
    """Minimise -mean MIWAE(M, K) (Rainforth et al. 2018), reparameterized gradient. MIWAE(1, K) = IWAE_K,
    MIWAE(M, 1) = the M-sample ELBO (Monte Carlo KL). Metrics: the bound, and IWAE_{MK} of the same draws."""
    _, z, log_q, _ = _draws(model, params, x, key, m * k)
    log_w, tempered = _log_w(model, params, x, z, log_q, beta)
    return -miwae_bound(tempered, m).mean(), {"miwae": miwae_bound(log_w, m).mean(),
                                              "iwae": log_mean_exp(sg(log_w)).mean()}


def ciwae_loss(model: VAE, params: Params, x, key, *, k: int, beta_ciwae: float, beta=1.0):
    """Minimise -mean CIWAE = -(b ELBO_K + (1 - b) IWAE_K), both from the same K draws (Rainforth et al.
    2018): CIWAE(1) is the K-sample ELBO (Monte Carlo KL), CIWAE(0) is IWAE_K."""
    _, z, log_q, _ = _draws(model, params, x, key, k)
    log_w, tempered = _log_w(model, params, x, z, log_q, beta)

    def combo(lw):
        return beta_ciwae * lw.mean(0) + (1.0 - beta_ciwae) * log_mean_exp(lw)

    return -combo(tempered).mean(), {"ciwae": combo(log_w).mean(), "elbo": sg(log_w).mean(),
                                     "iwae": log_mean_exp(sg(log_w)).mean()}


def piwae_loss(model: VAE, params: Params, x, key, *, m: int, k: int, beta=1.0):
    """PIWAE(M, K) (Rainforth et al. 2018) from one pass over T = M*K draws: the decoder's gradient is
    grad_theta IWAE_T = sum_i w~_i grad_theta log w_i (w~ normalised over all T), the encoder's is
    grad_phi MIWAE(M, K) = sum_i v_i grad_phi log w_i (v_i = w_i / (M sum_{j in group(i)} w_j)).
    Surrogate sum_i w~_i log w_i[z stopped] + v_i log w_i[theta stopped] with the weights fixed; value -IWAE_T.
    """
    _, z, log_q, _ = _draws(model, params, x, key, m * k)
    ll = jax.vmap(lambda zi: model.log_likelihood(params, x, zi))(sg(z))
    lp = jax.vmap(lambda zi: model.log_prior(params, zi))(sg(z))
    theta_term = ll + beta * (lp - sg(log_q))
    ll_phi = jax.vmap(lambda zi: model.log_likelihood(sg(params), x, zi))(z)
    lp_phi = jax.vmap(lambda zi: model.log_prior(sg(params), zi))(z)
    phi_term = ll_phi + beta * (lp_phi - log_q)
    log_w = sg(ll + lp - log_q)
    tempered = sg(phi_term)
    surrogate = jnp.sum(jax.nn.softmax(tempered, axis=0) * theta_term
                        + _group_weights(tempered, m) * phi_term, axis=0)
    bound = log_mean_exp(tempered)
    objective = bound + surrogate - sg(surrogate)
    return -objective.mean(), {"iwae": log_mean_exp(log_w).mean(), "miwae": miwae_bound(log_w, m).mean()}


def rws_loss(model: VAE, params: Params, x, key, *, k: int, beta=1.0, dreg: bool = False):
    """Reweighted wake-sleep (Bornschein & Bengio 2015; Le et al. 2019) with K draws, one pass:

    wake-theta:  sum_k w~_k grad_theta log p(x, z_k)                    (= grad_theta IWAE_K)
    wake-phi:    sum_k w~_k grad_phi log q(z_k|x), z_k held fixed       (-> -grad_phi KL(p(z|x) || q(z|x)))
    ``dreg``:    wake-phi as sum_k (w~_k - w~_k^2) (d log w_k / d z_k)(d z_k / d phi), log q's parameters
                 fixed (the doubly reparameterized form, Tucker et al. 2018): same expectation, lower variance.

    Surrogate with value -IWAE_K. The encoder is not trained on any bound, so the loss is not its objective.
    Needs a Gaussian q(z|x) (log q of a fixed z under a flow would need the flow's inverse).
    """
    check_path_estimator(model, "rws_dreg" if dreg else "rws")
    post, z, log_q, z0 = _draws(model, params, x, key, k, stop_q_grad=dreg)
    ll = jax.vmap(lambda zi: model.log_likelihood(params, x, zi))(sg(z))
    lp = jax.vmap(lambda zi: model.log_prior(params, zi))(sg(z))
    theta_term = ll + beta * (lp - sg(log_q))
    log_w = sg(ll + lp - log_q)
    w = jax.nn.softmax(sg(theta_term), axis=0)
    if dreg:
        phi_term = jax.vmap(lambda zi: model.log_joint(sg(params), x, zi))(z) - log_q
        phi_weight = w - jnp.square(w)
    else:
        phi_term = D.gaussian_log_prob(sg(z0), post.mu, post.logvar)  # log q_phi(z_k|x) at the fixed z_k
        phi_weight = w
    surrogate = jnp.sum(w * theta_term + phi_weight * phi_term, axis=0)
    bound = log_mean_exp(sg(theta_term))
    objective = bound + surrogate - sg(surrogate)
    return -objective.mean(), {"iwae": log_mean_exp(log_w).mean()}


# -- registered: objective.name -> loss; options from objective.k, objective.m, objective.beta_ciwae ----------


@register_objective("miwae")
def miwae(model: VAE, params: Params, x, key, *, k: int = 1, m: int = 1, beta=1.0, **_):
    """MIWAE(m, k): the mean of m IWAE_k bounds (Rainforth et al. 2018)."""
    return miwae_loss(model, params, x, key, m=m, k=k, beta=beta)


@register_objective("ciwae")
def ciwae(model: VAE, params: Params, x, key, *, k: int = 1, beta_ciwae: float = 0.5, beta=1.0, **_):
    """CIWAE(beta_ciwae) = beta_ciwae ELBO_k + (1 - beta_ciwae) IWAE_k (Rainforth et al. 2018)."""
    return ciwae_loss(model, params, x, key, k=k, beta_ciwae=beta_ciwae, beta=beta)


@register_objective("piwae")
def piwae(model: VAE, params: Params, x, key, *, k: int = 1, m: int = 1, beta=1.0, **_):
    """PIWAE(m, k): decoder on IWAE_{mk}, encoder on MIWAE(m, k) (Rainforth et al. 2018)."""
    return piwae_loss(model, params, x, key, m=m, k=k, beta=beta)


@register_objective("rws")
def rws(model: VAE, params: Params, x, key, *, k: int = 1, beta=1.0, **_):
    """Reweighted wake-sleep with k samples (Bornschein & Bengio 2015; Le et al. 2019)."""
    return rws_loss(model, params, x, key, k=k, beta=beta)


@register_objective("rws_dreg")
def rws_dreg(model: VAE, params: Params, x, key, *, k: int = 1, beta=1.0, **_):
    """Reweighted wake-sleep, wake-phi in its doubly reparameterized form (Tucker et al. 2018)."""
    return rws_loss(model, params, x, key, k=k, beta=beta, dreg=True)
