"""Encoder and decoder networks (Flax linen modules, used only through their pure ``apply``).

The encoder maps x to the parameters of q(z|x) = N(mu(x), diag exp(logvar(x))) (and, for an amortized
flow, to the flow's parameters); the decoder maps z to the parameters of p(x|z).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
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


class MLP(nn.Module):
    """Dense layers of the given widths, each followed by the activation."""

    hidden: Sequence[int]
    act: str = "tanh"

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.hidden):
            x = activation(self.act)(nn.Dense(width, name=f"hidden_{i}")(x))
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

    @nn.compact
    def __call__(self, x):
        h = MLP(self.hidden, self.act, name="mlp")(x)
        out = nn.Dense(2 * self.latent_dim, name="head")(h)
        mu, logvar = jnp.split(out, 2, axis=-1)
        flow_params = None
        if self.flow_shapes and self.flow_length:
            flow_params = {}
            for name, shape in self.flow_shapes:
                size = self.flow_length * math.prod(shape)
                raw = nn.Dense(size, name=f"flow_{name}", kernel_init=nn.initializers.normal(1e-3))(h)
                raw = raw.reshape(raw.shape[:-1] + (self.flow_length,) + tuple(shape))
                flow_params[name] = jnp.moveaxis(raw, -1 - len(shape), 0)
        return mu, logvar, flow_params


class Decoder(nn.Module):
    """z -> decoder output of width ``out_dim`` (or 2 * out_dim for a learned-variance Gaussian).

    ``output_act`` is applied to the mean ('identity' for logits or an unconstrained mean, 'sigmoid'
    for a mean in [0, 1] as in the worked example).
    """

    hidden: Sequence[int]
    out_dim: int
    act: str = "tanh"
    output_act: str = "identity"
    learned_variance: bool = False

    @nn.compact
    def __call__(self, z):
        h = MLP(self.hidden, self.act, name="mlp")(z)
        mean = activation(self.output_act)(nn.Dense(self.out_dim, name="out")(h))
        if not self.learned_variance:
            return mean
        logvar = nn.Dense(self.out_dim, name="out_logvar", kernel_init=nn.initializers.zeros)(h)
        return mean, logvar
