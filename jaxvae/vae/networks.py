"""Encoder and decoder networks (Flax linen modules, used only through their pure ``apply``).

The encoder maps x to the parameters of q(z|x) = N(mu(x), diag exp(logvar(x))) (and, for an amortized
flow, to the flow's parameters); the decoder maps z to the parameters of p(x|z).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
    "sigmoid": nn.sigmoid,
    "identity": lambda x: x,
}


def activation(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def _f32(x):
    """Network outputs leave in float32 (log-densities, log-weights and KL are never computed in bf16)."""
    return x if x is None or x.dtype == jnp.float32 else x.astype(jnp.float32)


class MLP(nn.Module):
    """Dense layers of the given widths, each followed by the activation.

    ``dtype``: the matmul compute dtype (None = the inputs' and parameters', i.e. float32); parameters
    stay float32 either way (mixed precision: ``model.compute_dtype``)."""

    hidden: Sequence[int]
    act: str = "tanh"
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden):
            x = activation(self.act)(nn.Dense(width, name=f"hidden_{i}", dtype=self.dtype)(x))
        return x


class Encoder(nn.Module):
    """x -> (mu, logvar, flow_params); one Dense head of width 2d split into mu and logvar.

    With ``flow_shapes`` (per-layer shapes of an amortized flow of ``flow_length`` layers), a second
    head outputs the flow parameters, returned with the layer axis first: shape (L, batch..., *shape).
    """

    hidden: Sequence[int]
    latent_dim: int
    act: str = "tanh"
    flow_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    flow_length: int = 0
    dtype: Any = None
    flow_init_scale: float = 1e-3  # std of the flow head's kernel at init (its bias starts at 0)
    flow_head_scale: float = 1.0  # the flow head's outputs are this constant times a Dense layer's

    @nn.compact
    def __call__(self, x):
        h = MLP(self.hidden, self.act, name="mlp", dtype=self.dtype)(x)
        out = _f32(nn.Dense(2 * self.latent_dim, name="head", dtype=self.dtype)(h))
        mu, logvar = jnp.split(out, 2, axis=-1)
        flow_params = None
        if self.flow_shapes and self.flow_length:
            flow_params = {}
            for name, shape in self.flow_shapes:
                size = self.flow_length * math.prod(shape)
                c = self.flow_head_scale  # raw = c (h W + b), W ~ N(0, (init_scale / c)^2) at init
                raw = _f32(nn.Dense(size, name=f"flow_{name}", dtype=self.dtype,
                                    kernel_init=nn.initializers.normal(self.flow_init_scale / c))(h))
                if c != 1.0:
                    raw = c * raw
                raw = raw.reshape(raw.shape[:-1] + (self.flow_length,) + tuple(shape))
                flow_params[name] = jnp.moveaxis(raw, -1 - len(shape), 0)
        return mu, logvar, flow_params


class Decoder(nn.Module):
    """z -> the likelihood's parameters: one Dense output layer per head (name, width, zero_init) of
    ``likelihood.heads(x_dim)``; a single head returns an array, several a tuple in their order.

    ``output_act`` is applied to the first head (the mean or logits: 'identity' for logits or an
    unconstrained mean, 'sigmoid' for a mean in [0, 1] as in the worked example).
    """

    hidden: Sequence[int]
    heads: tuple[tuple[str, int, bool], ...]
    act: str = "tanh"
    output_act: str = "identity"
    dtype: Any = None

    @nn.compact
    def __call__(self, z):
        h = MLP(self.hidden, self.act, name="mlp", dtype=self.dtype)(z)
        outs = []
        for i, (name, width, zero_init) in enumerate(self.heads):
            init = nn.initializers.zeros if zero_init else nn.linear.default_kernel_init
            y = _f32(nn.Dense(width, name=name, kernel_init=init, dtype=self.dtype)(h))
            outs.append(activation(self.output_act)(y) if i == 0 else y)
        return outs[0] if len(outs) == 1 else tuple(outs)
