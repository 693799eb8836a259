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
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxvae.vae import distributions as D
from jaxvae.vae import flows
from jaxvae.vae import likelihoods as _likelihoods  # noqa: F401 - registers the built-in likelihoods
from jaxvae.vae import priors as _priors  # noqa: F401 - registers the built-in priors
from jaxvae.vae import conv
from jaxvae.vae.networks import Decoder, Encoder
from jaxvae.vae.registry import FLOWS, LIKELIHOODS, PRIORS, build, freeze_options

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

    ``prior``, ``likelihood`` and ``flow`` are registered names or part objects (see jaxvae.vae.registry);
    ``flow_options`` / ``prior_options`` hold the options a registered flow / prior class is built with, e.g.
    ``VAE(784, 40, flow="iaf", flow_length=4, flow_options={"hidden": (320,), "context": 16})``.
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
    # images (jaxvae.vae.conv): x_shape = (H, W, C) makes x image-shaped (flat (..., x_dim) inputs are
    # reshaped); None = flat vectors, the MLP path exactly as before
    x_shape: tuple[int, ...] | None = None
    network: str = "mlp"  # mlp | conv | resnet | gated
    conv_widths: Sequence[int] = (32, 64)
    conv_kernel: int = 3
    conv_strides: Sequence[int] = (2, 2)
    normalization: str = "none"  # none | layer | group
    num_mixtures: int = 5  # components of the discretized logistic mixture
    compute_dtype: str = "float32"  # matmul dtype of the networks: float32 | bfloat16 (parameters stay f32)
    # the parts' options (model.flow_options / model.prior_options): a mapping or (name, value) pairs, kept
    # as sorted pairs (hashable); each part takes the ones it declares (its dataclass fields,
    # jaxvae.vae.registry.build), the amortized flow head its own (flows.HEAD_OPTIONS); others are ignored
    flow_options: Any = ()
    prior_options: Any = ()

    def __post_init__(self):
        object.__setattr__(self, "flow_options", freeze_options(self.flow_options))
        object.__setattr__(self, "prior_options", freeze_options(self.prior_options))
        for registry, options in ((FLOWS, self.flow_options), (PRIORS, self.prior_options)):
            for name, _ in options:
                problem = registry.unknown_option(name)
                if problem:
                    raise ValueError(problem)
        self.likelihood_part, self.prior_part  # unknown names fail here, with the registry's message
        if self.x_shape is not None and math.prod(self.x_shape) != self.x_dim:
            raise ValueError(f"x_shape {tuple(self.x_shape)} has {math.prod(self.x_shape)} values, x_dim is "
                             f"{self.x_dim}")
        if self.network not in conv.NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {conv.NETWORKS}")
        if self.is_conv:
            problem = conv.check_image_shape(self.x_shape or (), self.conv_strides)
            if problem:
                raise ValueError(problem)
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
        return flows.get(self.flow, self) if self.has_flow else None

    @property
    def flow_name(self) -> str:
        return _name(self.flow) if self.has_flow else "gaussian"

    @property
    def likelihood_name(self) -> str:
        return _name(self.likelihood)

    # -- networks -------------------------------------------------------------------------------
    @property
    def is_conv(self) -> bool:
        return self.network != "mlp"

    @property
    def encoder(self) -> Encoder:
        shapes = ()
        if self.has_flow and self.amortized_flow:
            shapes = tuple(sorted(flows.amortized_shapes(self.flow_part, self.latent_dim).items()))
        if self.is_conv:
            return conv.ConvEncoder(tuple(self.conv_widths), self.latent_dim, self.conv_kernel,
                                    tuple(self.conv_strides), self.activation, self.normalization,
                                    self.network == "resnet", shapes, self.flow_length if shapes else 0,
                                    gated=self.network == "gated")
        head = {**flows.HEAD_OPTIONS, **{k: v for k, v in self.flow_options if k in flows.HEAD_OPTIONS}}
        return Encoder(tuple(self.encoder_hidden), self.latent_dim, self.activation, shapes,
                       self.flow_length if shapes else 0, self.network_dtype,
                       float(head["init_scale"]), float(head["head_scale"]))

    @property
    def decoder(self) -> Decoder:
        heads = tuple(self.likelihood_part.heads(self.x_dim))
        if self.is_conv:
            return conv.ConvDecoder(tuple(self.conv_widths), tuple(self.x_shape), heads, self.conv_kernel,
                                    tuple(self.conv_strides), self.activation, self.normalization,
                                    self.network == "resnet", self.decoder_output_act,
                                    gated=self.network == "gated")
        return Decoder(tuple(self.decoder_hidden), heads, self.activation, self.decoder_output_act,
                       self.network_dtype)

    # -- image layout (only when x_shape is set) ---------------------------------------------------
    @property
    def _event_aware(self) -> bool:
        """The likelihood sums over its own ``event_ndim`` axes (image layout); others get flat arrays."""
        return hasattr(self.likelihood_part, "event_ndim")

    def as_image(self, x: jax.Array) -> jax.Array:
        """x (..., x_dim) or (..., H, W, C) -> (..., H, W, C)."""
        shape = tuple(self.x_shape)
        if x.shape[x.ndim - len(shape):] == shape:
            return x
        return x.reshape(*x.shape[:-1], *shape)

    def as_flat(self, x: jax.Array) -> jax.Array:
        """x (..., H, W, C) or (..., x_dim) -> (..., x_dim)."""
        if self.x_shape is None or x.shape[x.ndim - len(self.x_shape):] != tuple(self.x_shape):
            return x
        return x.reshape(*x.shape[: x.ndim - len(self.x_shape)], self.x_dim)

    def _map_heads(self, fn, out):
        return tuple(fn(o) for o in out) if isinstance(out, tuple) else fn(out)

    def _flat_heads(self, out):
        """Decoder output in image layout (..., H, W, k) -> (..., H W k)."""
        return self._map_heads(lambda o: o.reshape(*o.shape[:-3], -1), out)

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

    def init(self, key: jax.Array, output_bias: jax.Array | None = None, data=None) -> Params:
        """Fresh parameters; ``output_bias`` (e.g. the data's pixel log-odds) initialises the decoder bias;
        ``data`` (training examples, optional) goes to a prior's ``init_from_data`` (VampPrior
        pseudo-inputs drawn from the data)."""
        k_enc, k_dec, k_flow = jax.random.split(key, 3)
        x0 = jnp.zeros((1, *self.x_shape) if self.is_conv else (1, self.x_dim))
        params = {
            "encoder": self.encoder.init(k_enc, x0)["params"],
            "decoder": self.decoder.init(k_dec, jnp.zeros((1, self.latent_dim)))["params"],
        }
        if output_bias is not None:
            out = dict(params["decoder"]["out"])
            out["bias"] = jnp.asarray(output_bias, dtype=out["bias"].dtype).reshape(out["bias"].shape)
            params["decoder"] = {**params["decoder"], "out": out}
        if self.has_flow:
            flow_params = flows.init_params(k_flow, self.flow_part, self.flow_length, self.latent_dim)
            if self.amortized_flow:  # only the flow's global parameters (e.g. MADE weights) live here
                keep = flows.global_names(self.flow_part)
                flow_params = {k: v for k, v in flow_params.items() if k in keep}
            if flow_params:
                params["flow"] = flow_params
        prior = self.prior_part
        prior_params = prior.init(jax.random.fold_in(key, 3), self)
        if data is not None and hasattr(prior, "init_from_data"):
            prior_params = prior.init_from_data(jax.random.fold_in(key, 4), self, prior_params, data)
        if prior_params is not None:
            params["prior"] = prior_params
        return params

    def encode(self, params: Params, x: jax.Array) -> Posterior:
        if self.x_shape is not None:  # MLPs flatten at their input, conv nets take images
            x = self.as_image(x) if self.is_conv else self.as_flat(x)
        mu, logvar, flow_params = self.encoder.apply({"params": params["encoder"]}, x)
        if self.has_flow and not self.amortized_flow:
            flow_params = params["flow"]
        elif self.has_flow and "flow" in params:  # amortized part from the encoder, global part shared
            flow_params = {**(flow_params or {}), **params["flow"]}
        return Posterior(mu, logvar, flow_params)

    def decode(self, params: Params, z: jax.Array):
        """The decoder's output for z (the likelihood's parameters, e.g. Bernoulli logits); with x_shape
        each head in image layout (..., H, W, k)."""
        out = self.decoder.apply({"params": params["decoder"]}, z)
        if self.x_shape is not None and not self.is_conv:
            h, w = self.x_shape[:2]
            out = self._map_heads(lambda o: o.reshape(*o.shape[:-1], h, w, o.shape[-1] // (h * w)), out)
        return out

    # -- densities --------------------------------------------------------------------------------
    def log_likelihood(self, params: Params, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x|z), decoding exactly the z it is given; summed over all of x's axes (pixels, channels)."""
        out = self.decode(params, z)
        if self.x_shape is None:
            return self.likelihood_part.log_prob(x, out)
        if self._event_aware:  # e.g. a discretized mixture, which couples a pixel's channels
            return self.likelihood_part.log_prob(self.as_image(x), out)
        return self.likelihood_part.log_prob(self.as_flat(x), self._flat_heads(out))

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
            z, log_det = flows.apply(self.flow_part, dens.flow_params, z0)
            log_q = log_q - log_det
        return z, log_q, z0

    def sample_prior(self, params: Params, key: jax.Array, num: int) -> jax.Array:
        """``num`` draws z ~ p(z), shape (num, latent_dim)."""
        return self.prior_part.sample(self, params, key, num)

    def mean_image(self, params: Params, z: jax.Array) -> jax.Array:
        """E[x|z] (for pictures), flat (..., x_dim): sigmoid(logits) for Bernoulli, the mean for Gaussians."""
        out = self.decode(params, z)
        if self.x_shape is None:
            return self.likelihood_part.mean(out)
        if self._event_aware:
            return self.as_flat(self.likelihood_part.mean(out))
        return self.likelihood_part.mean(self._flat_heads(out))
