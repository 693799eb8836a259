"""The VAE: a prior, a posterior family and a likelihood, each a registered part, as pure functions.

    p(z)            the prior part (``model.prior``; N(0, I) by default),
    q_0(z_0|x)      N(mu(x), diag sigma^2(x)) from the encoder network,
    z = f_L o ... o f_1(z_0)   an optional flow (``model.flow``; amortized or global parameters),
    p(x|z)          the likelihood part (``model.likelihood``) of the decoder network's outputs.

``params = {"encoder": ..., "decoder": ..., ["flow": ...], ["prior": ...]}`` ("flow" only for a
non-amortized flow, "prior" only for a prior with parameters). The objectives and estimators use only
``encode``, ``sample_posterior``, ``log_likelihood``, ``log_prior``, ``log_joint`` and ``analytic_kl``, so
a part added through a registry works with every bound and estimator.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae import flows
from jaxvae.vae import likelihoods as _likelihoods  # noqa: F401 - registers the built-in likelihoods
from jaxvae.vae import priors as _priors  # noqa: F401 - registers the built-in priors
from jaxvae.vae.networks import Decoder, Encoder
from jaxvae.vae.registry import FLOWS, LIKELIHOODS, PRIORS, build

Params = dict[str, Any]


class Posterior(NamedTuple):
    """Parameters of q(z|x) for a batch: base Gaussian and (possibly amortized) flow parameters."""

    mu: jax.Array
    logvar: jax.Array
    flow_params: Any  # None, or dict of arrays with the layer axis first


def _name(part) -> str:
    return part if isinstance(part, str) else getattr(part, "name", type(part).__name__.lower())


@dataclasses.dataclass(frozen=True)
class VAE:
    """A VAE: networks and parts. Holds no parameters, only structure (hashable, a static jit argument).

    ``prior``, ``likelihood`` and ``flow`` are registered names or part objects (see jaxvae.vae.registry).
    """

    x_dim: int
    latent_dim: int
    encoder_hidden: Sequence[int] = (200, 200)
    decoder_hidden: Sequence[int] = (200, 200)
    activation: str = "tanh"
    likelihood: Any = "bernoulli"
    obs_variance: float = 1.0  # sigma^2 of the fixed-variance Gaussian decoder
    decoder_output_act: str = "identity"
    flow: Any = "none"
    flow_length: int = 0
    amortized_flow: bool = True
    prior: Any = "standard_normal"
    compute_dtype: str = "float32"  # matmul dtype of the networks: float32 | bfloat16 (parameters stay f32)

    def __post_init__(self):
        self.likelihood_part, self.prior_part  # unknown names fail here, with the registry's message
        if self.flow != "none" and isinstance(self.flow, str) and self.flow not in FLOWS:
            raise ValueError(FLOWS.unknown(self.flow))

    # -- parts ------------------------------------------------------------------------------------
    @property
    def likelihood_part(self):
        return build(LIKELIHOODS, self.likelihood, self)

    @property
    def prior_part(self):
        return build(PRIORS, self.prior, self)

    @property
    def has_flow(self) -> bool:
        return self.flow not in ("none", None) and self.flow_length > 0

    @property
    def flow_part(self):
        return flows.get(self.flow) if self.has_flow else None

    @property
    def flow_name(self) -> str:
        return _name(self.flow) if self.has_flow else "gaussian"

    @property
    def likelihood_name(self) -> str:
        return _name(self.likelihood)

    # -- networks -------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        shapes = ()
        if self.has_flow and self.amortized_flow:
            shapes = tuple(sorted(self.flow_part.param_shapes(self.latent_dim).items()))
        return Encoder(tuple(self.encoder_hidden), self.latent_dim, self.activation, shapes,
                       self.flow_length if shapes else 0, self.network_dtype)

    @property
    def decoder(self) -> Decoder:
        return Decoder(tuple(self.decoder_hidden), tuple(self.likelihood_part.heads(self.x_dim)),
                       self.activation, self.decoder_output_act, self.network_dtype)

    @property
    def network_dtype(self):
        """None (float32 throughout) or the reduced matmul dtype of ``compute_dtype``."""
        if self.compute_dtype in ("float32", None):
            return None
        if self.compute_dtype not in ("bfloat16", "float16"):
            raise ValueError(f"model.compute_dtype={self.compute_dtype!r}: choose 'float32' or 'bfloat16'")
        return jnp.dtype(self.compute_dtype)

    def in_float32(self) -> "VAE":
        """The same model with float32 matmuls (evaluation always runs in float32: docs/mixed_precision.md)."""
        return self if self.compute_dtype == "float32" else dataclasses.replace(self, compute_dtype="float32")

    def init(self, key: jax.Array, output_bias: jax.Array | None = None) -> Params:
        """Fresh parameters; ``output_bias`` (e.g. the data's pixel log-odds) initialises the decoder bias."""
        k_enc, k_dec, k_flow = jax.random.split(key, 3)
        params = {
            "encoder": self.encoder.init(k_enc, jnp.zeros((1, self.x_dim)))["params"],
            "decoder": self.decoder.init(k_dec, jnp.zeros((1, self.latent_dim)))["params"],
        }
        if output_bias is not None:
            out = dict(params["decoder"]["out"])
            out["bias"] = jnp.asarray(output_bias, dtype=out["bias"].dtype).reshape(out["bias"].shape)
            params["decoder"] = {**params["decoder"], "out": out}
        if self.has_flow and not self.amortized_flow:
            params["flow"] = flows.init_params(k_flow, self.flow, self.flow_length, self.latent_dim)
        prior_params = self.prior_part.init(jax.random.fold_in(key, 3), self)
        if prior_params is not None:
            params["prior"] = prior_params
        return params

    def encode(self, params: Params, x: jax.Array) -> Posterior:
        mu, logvar, flow_params = self.encoder.apply({"params": params["encoder"]}, x)
        if self.has_flow and not self.amortized_flow:
            flow_params = params["flow"]
        return Posterior(mu, logvar, flow_params)

    def decode(self, params: Params, z: jax.Array):
        """The decoder's output for z (the likelihood's parameters, e.g. Bernoulli logits)."""
        return self.decoder.apply({"params": params["decoder"]}, z)

    # -- densities --------------------------------------------------------------------------------
    def log_likelihood(self, params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x|z), decoding exactly the z it is given."""
        return self.likelihood_part.log_prob(x, self.decode(params, z))

    def log_prior(self, params: Params, z: jax.Array) -> jax.Array:
        """log p(z)."""
        return self.prior_part.log_prob(self, params, z)

    def log_joint(self, params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x, z) = log p(x|z) + log p(z)."""
        return self.log_likelihood(params, x, z) + self.log_prior(params, z)

    def analytic_kl(self, params: Params, post: Posterior) -> jax.Array | None:
        """KL(q(z|x) || p(z)) in closed form, or None when there is none (a flow, or a prior without one)."""
        kl = getattr(self.prior_part, "analytic_kl", None)
        if self.has_flow or kl is None:
            return None
        return kl(post.mu, post.logvar)

    def sample_posterior(self, post: Posterior, key: jax.Array, stop_q_grad: bool = False):
        """One reparameterized draw z ~ q(z|x) per example, with log q(z|x) of that same z.

        Returns (z_L, log q_L(z_L|x), z_0). With ``stop_q_grad`` the density's parameters are held
        fixed (gradient flows only through the sample path): the "sticking the landing" / DReG form.
        """
        z0 = D.gaussian_sample(key, post.mu, post.logvar)
        dens = jax.lax.stop_gradient(post) if stop_q_grad else post
        log_q = D.gaussian_log_prob(z0, dens.mu, dens.logvar)
        z = z0
        if self.has_flow:
            z, log_det = flows.apply(self.flow, dens.flow_params, z0)
            log_q = log_q - log_det
        return z, log_q, z0

    def sample_prior(self, params: Params, key: jax.Array, num: int) -> jax.Array:
        """``num`` draws z ~ p(z), shape (num, latent_dim)."""
        return self.prior_part.sample(self, params, key, num)

    def mean_image(self, params: Params, z: jax.Array) -> jax.Array:
        """E[x|z] (for pictures): sigmoid(logits) for Bernoulli, the mean for Gaussians."""
        return self.likelihood_part.mean(self.decode(params, z))
