"""The VAE as a bundle of pure functions of a parameter pytree.

    p(z) = N(0, I),   q_0(z_0|x) = N(mu(x), diag sigma^2(x)),   z = f_L o ... o f_1(z_0) (optional flow),
    p(x|z) = Bernoulli(sigmoid(logits(z)))  |  N(mean(z), sigma^2 I)  |  N(mean(z), diag exp(logvar(z))).

``params = {"encoder": ..., "decoder": ..., "flow": ...}`` ("flow" only for a non-amortized flow).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae import flows
from jaxvae.vae.networks import Decoder, Encoder

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
FLOWS = ("none",) + tuple(sorted(flows.LAYERS))

Params = dict[str, Any]


class Posterior(NamedTuple):
    """Parameters of q(z|x) for a batch: base Gaussian and (possibly amortized) flow parameters."""

    mu: jax.Array
    logvar: jax.Array
    flow_params: Any  # None, or dict of arrays with the layer axis first


@dataclasses.dataclass(frozen=True)
class VAE:
    """A VAE: networks, likelihood and posterior flow. Holds no parameters, only structure."""

    x_dim: int
    latent_dim: int
    encoder_hidden: Sequence[int] = (200, 200)
    decoder_hidden: Sequence[int] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    obs_variance: float = 1.0  # sigma^2 of the fixed-variance Gaussian decoder
    decoder_output_act: str = "identity"
    flow: str = "none"
    flow_length: int = 0
    amortized_flow: bool = True

    def __post_init__(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.flow not in FLOWS:
            raise ValueError(f"unknown flow {self.flow!r}; choose one of {FLOWS}")

    # -- networks -------------------------------------------------------------------------------
    @property
    def has_flow(self) -> bool:
        return self.flow != "none" and self.flow_length > 0

    @property
    def encoder(self) -> Encoder:
        shapes = ()
        if self.has_flow and self.amortized_flow:
            shapes = tuple(sorted(flows.param_shapes(self.flow, self.latent_dim).items()))
        return Encoder(tuple(self.encoder_hidden), self.latent_dim, self.activation, shapes,
                       self.flow_length if shapes else 0)

    @property
    def decoder(self) -> Decoder:
        return Decoder(tuple(self.decoder_hidden), self.x_dim, self.activation,
                       self.decoder_output_act, self.likelihood == "gaussian_learned")

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
        return params

    def encode(self, params: Params, x: jax.Array) -> Posterior:
        mu, logvar, flow_params = self.encoder.apply({"params": params["encoder"]}, x)
        if self.has_flow and not self.amortized_flow:
            flow_params = params["flow"]
        return Posterior(mu, logvar, flow_params)

    def decode(self, decoder_params: Params, z: jax.Array):
        return self.decoder.apply({"params": decoder_params}, z)

    # -- densities --------------------------------------------------------------------------------
    def log_likelihood(self, decoder_params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x|z), decoding exactly the z it is given."""
        out = self.decode(decoder_params, z)
        if self.likelihood == "bernoulli":
            return D.bernoulli_log_prob(x, out)
        if self.likelihood == "gaussian":
            return D.gaussian_fixed_log_prob(x, out, self.obs_variance)
        mean, logvar = out
        return D.gaussian_learned_log_prob(x, mean, logvar)

    def log_joint(self, decoder_params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x, z) = log p(x|z) + log p(z)."""
        return self.log_likelihood(decoder_params, x, z) + D.standard_normal_log_prob(z)

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

    def mean_image(self, decoder_params: Params, z: jax.Array) -> jax.Array:
        """E[x|z]: sigmoid(logits) for Bernoulli, the mean for Gaussians (for pictures)."""
        out = self.decode(decoder_params, z)
        if self.likelihood == "bernoulli":
            return jax.nn.sigmoid(out)
        return out[0] if self.likelihood == "gaussian_learned" else out
