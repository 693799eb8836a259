"""A VAE with L Gaussian stochastic layers (Burda, Grosse & Salakhutdinov 2015, section 5).

Generative model (top-down)::

    p(z_L) = N(0, I),   p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), diag exp(v_l(z_{l+1}))),   p(x | z_1) the likelihood,

recognition model (bottom-up, every layer reparameterized)::

    q(z_1 | x) = N(m_1(x), diag exp(s_1(x))),   q(z_{l+1} | z_l) = N(m_{l+1}(z_l), diag exp(s_{l+1}(z_l))).

A latent sample is the tuple ``z = (z_1, ..., z_L)`` (a pytree), so the objectives and estimators of
jaxvae.vae (``elbo_terms``, ``iwae_loss``, ``iwae_dreg_loss``, ``iwae_bound_chunked``) use the model
through the same methods as ``VAE``: ``log w = log p(x|z_1) + log p(z) - log q(z|x)`` with
``log p(z) = log p(z_L) + sum_l log p(z_l|z_{l+1})`` and ``log q(z|x) = log q(z_1|x) + sum_l log q(z_{l+1}|z_l)``.
The KL term of the ELBO is analytic only for L = 1 (where it is exact); otherwise Monte Carlo.

The paper's two-layer architecture: x -> [200, 200] -> z_1 (100) -> [100, 100] -> z_2 (50) for q, and
z_2 -> [100, 100] -> z_1 -> [200, 200] -> x for p, tanh: ``latent_dims=(100, 50)``,
``encoder_hidden=decoder_hidden=(200, 200)``, ``upper_hidden=(100, 100)``.

Parameters: the layer next to x keeps the ``VAE`` layout (``params["encoder"]``, ``params["decoder"]``),
so one stochastic layer is exactly ``VAE``'s parameter pytree (and gives its numbers bit for bit); the
upper layers' networks live beside them: ``params["encoder"]["q_z{l}"]`` (q(z_l|z_{l-1}), l >= 2) and
``params["decoder"]["p_z{l}"]`` (p(z_l|z_{l+1}), l < L).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae import likelihoods as _likelihoods  # noqa: F401 - registers the built-in likelihoods
from jaxvae.vae import priors as _priors  # noqa: F401 - registers the built-in priors
from jaxvae.vae.networks import Decoder, Encoder
from jaxvae.vae.registry import LIKELIHOODS, PRIORS, build

Params = dict[str, Any]
_UPPER = ("q_z", "p_z")  # key prefixes of the upper layers' networks inside params["encoder"/"decoder"]


class HierarchicalPosterior(NamedTuple):
    """q(z|x) for a batch: the first layer's Gaussian, and the upper layers' recognition networks'
    parameters (q(z_{l+1}|z_l) depends on the sampled z_l, so it is evaluated while sampling)."""

    mu: jax.Array  # mean of q(z_1|x)
    logvar: jax.Array  # log-variance of q(z_1|x)
    flow_params: Any  # always None (no flow)
    upper: tuple  # parameters of q(z_2|z_1), ..., q(z_L|z_{L-1})


def _own(p: dict) -> dict:
    """A network's own parameters (the upper layers' entries stripped)."""
    return {k: v for k, v in p.items() if not k.startswith(_UPPER)}


def _bottom(z):
    """z_1 from a latent tuple (or an array that already is z_1)."""
    return z[0] if isinstance(z, (tuple, list)) else z


@dataclasses.dataclass(frozen=True)
class HierarchicalVAE:
    """A VAE with ``len(latent_dims)`` stochastic layers; structure only (hashable, a static jit argument).

    ``encoder_hidden``/``decoder_hidden``: the MLPs between x and z_1; ``upper_hidden``: the MLPs between
    z_l and z_{l+1} (both directions).
    """

    x_dim: int
    latent_dims: Sequence[int] = (100, 50)
    encoder_hidden: Sequence[int] = (200, 200)
    decoder_hidden: Sequence[int] = (200, 200)
    upper_hidden: Sequence[int] = (100, 100)
    activation: str = "tanh"
    likelihood: Any = "bernoulli"
    obs_variance: float = 1.0
    decoder_output_act: str = "identity"

    # What the runner and the estimators read of any model: no flow, an N(0, I) top prior, float32 networks.
    flow = "none"
    flow_length = 0
    amortized_flow = True
    prior = "standard_normal"
    compute_dtype = "float32"  # (mixed precision, model.compute_dtype on newer branches: VAE only for now)
    network_dtype = None

    def in_float32(self) -> "HierarchicalVAE":
        """The same model (its networks always compute in float32)."""
        return self

    def __post_init__(self):
        if not self.latent_dims or any(int(d) < 1 for d in self.latent_dims):
            raise ValueError(f"latent_dims must be positive sizes, one per stochastic layer; got {self.latent_dims}")
        self.likelihood_part  # unknown names fail here, with the registry's message

    # -- parts ------------------------------------------------------------------------------------
    @property
    def stochastic_layers(self) -> int:
        return len(self.latent_dims)

    @property
    def latent_dim(self) -> int:
        """Size of z_1, the layer p(x|z_1) decodes (what pictures traverse)."""
        return int(self.latent_dims[0])

    @property
    def likelihood_part(self):
        return build(LIKELIHOODS, self.likelihood, self)

    @property
    def prior_part(self):
        """The top layer's prior p(z_L) = N(0, I)."""
        return build(PRIORS, self.prior, self)

    has_flow = False
    flow_part = None
    flow_name = "gaussian"

    @property
    def likelihood_name(self) -> str:
        lk = self.likelihood
        return lk if isinstance(lk, str) else getattr(lk, "name", type(lk).__name__.lower())

    # -- networks -------------------------------------------------------------------------------
    def _q_net(self, l: int) -> Encoder:
        """q(z_l|z_{l-1}) for l >= 2 (q(z_1|x) for l = 1)."""
        hidden = self.encoder_hidden if l == 1 else self.upper_hidden
        return Encoder(tuple(hidden), int(self.latent_dims[l - 1]), self.activation)

    def _p_net(self, l: int) -> Encoder:
        """p(z_l|z_{l+1}) for l < L: an MLP to the mean and log-variance of z_l."""
        return Encoder(tuple(self.upper_hidden), int(self.latent_dims[l - 1]), self.activation)

    @property
    def decoder(self) -> Decoder:
        return Decoder(tuple(self.decoder_hidden), tuple(self.likelihood_part.heads(self.x_dim)),
                       self.activation, self.decoder_output_act)

    def init(self, key: jax.Array, output_bias: jax.Array | None = None, data=None) -> Params:
        """Fresh parameters (the first layer's drawn as ``VAE.init`` draws them); ``output_bias``
        initialises the decoder's output bias (e.g. the data's pixel log-odds)."""
        k_enc, k_dec, _ = jax.random.split(key, 3)
        enc = dict(self._q_net(1).init(k_enc, jnp.zeros((1, self.x_dim)))["params"])
        dec = dict(self.decoder.init(k_dec, jnp.zeros((1, self.latent_dim)))["params"])
        if output_bias is not None:
            out = dict(dec["out"])
            out["bias"] = jnp.asarray(output_bias, dtype=out["bias"].dtype).reshape(out["bias"].shape)
            dec["out"] = out
        dims = [int(d) for d in self.latent_dims]
        for l in range(2, self.stochastic_layers + 1):
            kq, kp = jax.random.split(jax.random.fold_in(key, 100 + l))
            enc[f"q_z{l}"] = self._q_net(l).init(kq, jnp.zeros((1, dims[l - 2])))["params"]
            dec[f"p_z{l - 1}"] = self._p_net(l - 1).init(kp, jnp.zeros((1, dims[l - 1])))["params"]
        return {"encoder": enc, "decoder": dec}

    def encode(self, params: Params, x: jax.Array) -> HierarchicalPosterior:
        mu, logvar, _ = self._q_net(1).apply({"params": _own(params["encoder"])}, x)
        upper = tuple(params["encoder"][f"q_z{l}"] for l in range(2, self.stochastic_layers + 1))
        return HierarchicalPosterior(mu, logvar, None, upper)

    def decode(self, params: Params, z):
        """The likelihood's parameters for z_1 (``z``: the latent tuple, or z_1 itself)."""
        return self.decoder.apply({"params": _own(params["decoder"])}, _bottom(z))

    def _q_upper(self, upper, l: int, z_below):
        mu, logvar, _ = self._q_net(l).apply({"params": upper[l - 2]}, z_below)
        return mu, logvar

    def _p_cond(self, params: Params, l: int, z_above):
        mu, logvar, _ = self._p_net(l).apply({"params": params["decoder"][f"p_z{l}"]}, z_above)
        return mu, logvar

    # -- densities --------------------------------------------------------------------------------
    def log_likelihood(self, params: Params, x: jax.Array, z) -> jax.Array:
        """log p(x|z_1)."""
        return self.likelihood_part.log_prob(x, self.decode(params, z))

    def log_prior(self, params: Params, z) -> jax.Array:
        """log p(z) = log N(z_L; 0, I) + sum_{l<L} log N(z_l; mu_l(z_{l+1}), diag exp(v_l(z_{l+1})))."""
        lp = D.standard_normal_log_prob(z[-1])
        for l in range(self.stochastic_layers - 1, 0, -1):
            mu, logvar = self._p_cond(params, l, z[l])
            lp = lp + D.gaussian_log_prob(z[l - 1], mu, logvar)
        return lp

    def log_joint(self, params: Params, x: jax.Array, z) -> jax.Array:
        """log p(x, z) = log p(x|z_1) + log p(z)."""
        return self.log_likelihood(params, x, z) + self.log_prior(params, z)

    def analytic_kl(self, params: Params, post: HierarchicalPosterior) -> jax.Array | None:
        """KL(q(z_1|x) || N(0, I)) in closed form for one layer; None (Monte Carlo) for L > 1."""
        if self.stochastic_layers > 1:
            return None
        return D.kl_standard_normal(post.mu, post.logvar)

    def sample_posterior(self, post: HierarchicalPosterior, key: jax.Array, stop_q_grad: bool = False):
        """One reparameterized draw z = (z_1, ..., z_L) ~ q(z|x) per example, bottom-up, with log q(z|x).

        z_1 uses ``key`` (as ``VAE``), z_l for l >= 2 ``fold_in(key, l)``. With ``stop_q_grad`` every
        layer's density parameters are held fixed while the samples stay differentiable (STL / DReG):
        log q(z_{l+1}|z_l) is evaluated with stopped network parameters at the live z_l and z_{l+1}.
        Returns (z, log q(z|x), z) (the third entry is the base sample; no flow here).
        """
        dens = jax.lax.stop_gradient(post) if stop_q_grad else post
        z = D.gaussian_sample(key, post.mu, post.logvar)
        log_q = D.gaussian_log_prob(z, dens.mu, dens.logvar)
        zs = [z]
        for l in range(2, self.stochastic_layers + 1):
            mu, logvar = self._q_upper(post.upper, l, zs[-1])
            z = D.gaussian_sample(jax.random.fold_in(key, l), mu, logvar)
            if stop_q_grad:
                mu, logvar = self._q_upper(dens.upper, l, zs[-1])
            log_q = log_q + D.gaussian_log_prob(z, mu, logvar)
            zs.append(z)
        zs = tuple(zs)
        return zs, log_q, zs

    def sample_prior(self, params: Params, key: jax.Array, num: int):
        """Ancestral draws z_L ~ N(0, I) (with ``key``), z_l ~ p(z_l|z_{l+1}) (``fold_in(key, l)``):
        the tuple (z_1, ..., z_L), each (num, d_l)."""
        z = jax.random.normal(key, (num, int(self.latent_dims[-1])))
        zs = [z]
        for l in range(self.stochastic_layers - 1, 0, -1):
            mu, logvar = self._p_cond(params, l, zs[0])
            zs.insert(0, D.gaussian_sample(jax.random.fold_in(key, l), mu, logvar))
        return tuple(zs)

    def mean_image(self, params: Params, z) -> jax.Array:
        """E[x|z_1] (for pictures)."""
        return self.likelihood_part.mean(self.decode(params, z))

    def unit_kl(self, params: Params, x: jax.Array, key: jax.Array, num_samples: int = 20):
        """Each unit's share of the KL, per layer: the Monte Carlo average over ``num_samples`` draws
        z ~ q(z|x) (keys ``split(key)``) of
            log q(z_{l,u} | z_{l-1}) - log p(z_{l,u} | z_{l+1})      (z_0 = x; p(z_L) = N(0, I)),
        a tuple of (batch, d_l) arrays, z_1 first. Summed over units and layers it is the Monte Carlo KL
        E_q[log q(z|x) - log p(z)]. Unlike the variance criterion of active units, it does not count a
        unit of z_l (l < L) that follows its conditional prior p(z_l | z_{l+1}) (whose mean moves with x):
        such a unit carries ~0 nats (docs/iwae_paper.md)."""
        post = self.encode(params, x)
        log_normal = D.gaussian_log_prob_per_unit

        def one(k):
            zs = self.sample_posterior(post, k)[0]
            terms = []
            for l in range(1, self.stochastic_layers + 1):
                q_mu, q_lv = (post.mu, post.logvar) if l == 1 else self._q_upper(post.upper, l, zs[l - 2])
                if l < self.stochastic_layers:
                    p_mu, p_lv = self._p_cond(params, l, zs[l])
                else:
                    p_mu = p_lv = jnp.zeros_like(zs[l - 1])
                terms.append(log_normal(zs[l - 1], q_mu, q_lv) - log_normal(zs[l - 1], p_mu, p_lv))
            return tuple(terms)

        draws = jax.vmap(one)(jax.random.split(key, num_samples))
        return tuple(t.mean(0) for t in draws)

    def posterior_means(self, params: Params, x: jax.Array, key: jax.Array, num_samples: int = 100):
        """E_q[z_l|x] per layer (active units): exact for z_1 (its mean m_1(x)); for l >= 2 the Monte Carlo
        average of the conditional means, E_q[z_l|x] = E_{q(z_{l-1}|x)}[m_l(z_{l-1})] (Rao-Blackwellized:
        an inactive unit, whose m_l is constant, gets no sampling noise), ``num_samples`` draws."""
        post = self.encode(params, x)
        means = [post.mu]
        if self.stochastic_layers > 1:
            zs = jax.vmap(lambda k: self.sample_posterior(post, k)[0])(jax.random.split(key, num_samples))
            for l in range(2, self.stochastic_layers + 1):
                mu, _ = self._q_upper(post.upper, l, zs[l - 2])
                means.append(mu.mean(0))
        return tuple(means)
