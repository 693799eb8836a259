"""Normalizing flows on the latent z, with their log-det-Jacobians.

A flow of length L is a stack of invertible maps z_k = f_k(z_{k-1}); the posterior density of the last
sample follows from the change of variables (Rezende & Mohamed, 2015, eq. 7):

    log q_L(z_L) = log q_0(z_0) - sum_{k=1}^{L} log |det df_k / dz_{k-1}|.

Each flow is a frozen object registered by name (``model.flow``) with ``param_shapes(dim)`` and
``layer(params, z) -> (f(z), log|det df/dz|)``. Parameters are dicts of arrays whose leading axis is the layer index; any further leading axes
(e.g. a batch axis for amortized flows) broadcast against the batch axes of ``z``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxvae.vae.registry import FLOWS, register_flow

FlowParams = dict[str, jax.Array]

_TINY = 1e-12


def planar_u_hat(u: jax.Array, w: jax.Array) -> jax.Array:
    """u_hat = u + [m(w.u) - w.u] w / ||w||^2 with m(a) = -1 + softplus(a + log(e - 1)), so w.u_hat > -1.

    That constraint makes f(z) = z + u_hat tanh(w.z + b) invertible (Rezende & Mohamed, 2015, app. A.1).
    The shift log(e - 1) gives m(0) = 0 (the paper's m(a) = -1 + softplus(a) has m(0) = -0.31): then u = 0
    is the identity map and m(a) - a = O(a) near w = 0, so small parameters give a near-identity layer
    instead of a contraction by 0.69 along w with u_hat ~ 1 / ||w||. m(a) - a = log1p(expm1(-a) / e) is
    computed in that form (no cancellation near a = 0; a clamped at -80, where m(a) = -1 in floats).
    """
    wu = jnp.sum(w * u, axis=-1, keepdims=True)
    a = jnp.maximum(wu, -80.0)
    m_minus_wu = jnp.log1p(jnp.expm1(-a) / math.e) + (a - wu)
    return u + m_minus_wu * w / (jnp.sum(jnp.square(w), axis=-1, keepdims=True) + _TINY)


def planar(params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One planar layer f(z) = z + u_hat tanh(w.z + b).

    log|det J| = log|1 + u_hat . psi(z)|, psi(z) = (1 - tanh^2(w.z + b)) w.
    ``params``: u, w of shape (..., d), b of shape (...).
    """
    u, w, b = params["u"], params["w"], params["b"]
    u_hat = planar_u_hat(u, w)
    a = jnp.sum(w * z, axis=-1) + b
    h = jnp.tanh(a)
    f = z + u_hat * h[..., None]
    psi_dot_u = (1.0 - jnp.square(h)) * jnp.sum(w * u_hat, axis=-1)
    return f, jnp.log(jnp.abs(1.0 + psi_dot_u) + _TINY)


def radial(params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One radial layer f(z) = z + beta h(alpha, r) (z - z0), h = 1 / (alpha + r), r = ||z - z0||.

    alpha = softplus(alpha_raw) > 0 and beta = -alpha + softplus(beta_raw) >= -alpha keep it invertible;
    log|det J| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r), h' = -1 / (alpha + r)^2.
    ``params``: z0 of shape (..., d), alpha_raw and beta_raw of shape (...).
    """
    z0 = params["z0"]
    alpha = jax.nn.softplus(params["alpha_raw"])
    beta = -alpha + jax.nn.softplus(params["beta_raw"])
    diff = z - z0
    r = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + _TINY)
    h = 1.0 / (alpha + r)
    bh = beta * h
    f = z + bh[..., None] * diff
    d = jnp.shape(z)[-1]
    log_det = (d - 1) * jnp.log1p(bh) + jnp.log(1.0 + bh - beta * r * jnp.square(h))
    return f, log_det


@register_flow("planar")
@dataclasses.dataclass(frozen=True)
class Planar:
    """Planar layers (Rezende & Mohamed 2015): ``planar`` above, per-layer parameters u, w (d,), b ()."""

    def param_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        return {"u": (dim,), "w": (dim,), "b": ()}

    def layer(self, params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return planar(params, z)


@register_flow("radial")
@dataclasses.dataclass(frozen=True)
class Radial:
    """Radial layers (Rezende & Mohamed 2015): ``radial`` above, per-layer z0 (d,), alpha_raw, beta_raw ()."""

    def param_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        return {"z0": (dim,), "alpha_raw": (), "beta_raw": ()}

    def layer(self, params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return radial(params, z)


def get(kind) -> "Planar | Radial":
    """The flow object for a registered name (or the object itself)."""
    return FLOWS.get(kind)() if isinstance(kind, str) else kind


def param_shapes(kind, dim: int) -> dict[str, tuple[int, ...]]:
    """Per-layer parameter shapes of one flow layer acting on a ``dim``-dimensional z."""
    return get(kind).param_shapes(dim)


def init_params(key: jax.Array, kind, length: int, dim: int, scale: float = 0.01) -> FlowParams:
    """Small random parameters for ``length`` layers (near-identity maps), stacked on axis 0."""
    flow = get(kind)
    if hasattr(flow, "init_params"):
        return flow.init_params(key, length, dim, scale)
    shapes = flow.param_shapes(dim)
    keys = jax.random.split(key, len(shapes))
    return {
        name: scale * jax.random.normal(k, (length,) + shape)
        for k, (name, shape) in zip(keys, sorted(shapes.items()))
    }


def apply(kind, params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Push z through all layers: returns (z_L, sum_k log|det df_k/dz_{k-1}|).

    ``lax.scan`` over the layer axis keeps compile time flat in the flow length (80 layers compile as 1).
    """
    layer = get(kind).layer

    def step(carry, layer_params):
        z, total = carry
        z, log_det = layer(layer_params, z)
        return (z, total + log_det), None

    init = (z, jnp.zeros(jnp.shape(z)[:-1], dtype=jnp.result_type(z)))
    (z, total), _ = jax.lax.scan(step, init, params)
    return z, total


LAYERS = {"planar": planar, "radial": radial}  # the single-layer maps, by name (tests, pictures)
