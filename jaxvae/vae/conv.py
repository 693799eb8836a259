"""Convolutional encoders and decoders for images (N, H, W, C) (Flax linen, used through ``apply``).

Two families, chosen by ``model.network``:

- ``conv``: a plain stack. Encoder: per stage a (kernel x kernel, stride s) convolution -> normalization
  -> activation, then a Dense head to (mu, logvar). Decoder: Dense to the smallest feature map, per stage
  a transposed convolution (stride s) -> normalization -> activation, then one output convolution per
  likelihood head. The shape of DCGAN-style VAEs (as in pythae's MNIST/CIFAR nets), made small.
- ``resnet``: each stage is the strided (transposed) convolution followed by one pre-activation residual
  block h + conv(act(norm(conv(act(norm(h)))))) (He et al. 2016), as in the IAF/NVAE encoders.
- ``gated``: the ``conv`` stack with every hidden layer gated (van den Berg et al. 2018, Sylvester flows;
  Dauphin et al. 2017): h = (W_f * x + b_f) * sigmoid(W_g * x + b_g) for the strided convolutions, the
  decoder's Dense to the smallest map and the transposed convolutions. The gate is the nonlinearity
  (``model.activation`` is not used); normalization, if any, follows the gate. W_f and W_g are stored as
  one kernel of 2 C outputs (the first C are the filter, the last C the gate): the same function and the
  same initial distribution as two separate kernels, in one convolution. The output heads are not gated.

Normalization is ``none``, ``layer`` (over H, W, C of each example) or ``group`` (GroupNorm, Wu & He
2018); never batch norm, whose batch statistics would couple the examples (and the K importance samples)
that the bounds treat as independent. Sizes: H and W must be divisible by the product of the strides
(28x28 with strides (2, 2): 7x7 at the bottom; 32x32: 8x8).

The decoder's heads come from the likelihood's ``heads(x_dim)`` (name, width, zero_init): a head of width
H W k becomes a k-channel output convolution plus a per-pixel bias of shape (H, W, k) (so the data-driven
output-bias init of the MLP decoder applies unchanged). Outputs keep the image layout (..., H, W, k).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvae.vae.networks import activation

NETWORKS = ("mlp", "conv", "resnet", "gated")
NORMALIZATIONS = ("none", "layer", "group")


def check_image_shape(x_shape: Sequence[int], strides: Sequence[int]) -> str | None:
    """None if a conv net with ``strides`` fits images of shape (H, W, C), else why not (one line)."""
    if len(x_shape) != 3:
        return f"conv networks need images (H, W, C), got shape {tuple(x_shape)}"
    f = math.prod(strides)
    if x_shape[0] % f or x_shape[1] % f:
        return (f"images of {x_shape[0]}x{x_shape[1]} are not divisible by the product {f} of "
                f"model.conv_strides={tuple(strides)}")
    return None


def _norm(kind: str, name: str):
    if kind == "none":
        return lambda h: h
    if kind == "layer":
        return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)
    if kind == "group":
        return lambda h: nn.GroupNorm(num_groups=math.gcd(8, h.shape[-1]), name=name)(h)
    raise ValueError(f"unknown normalization {kind!r}; choose one of {NORMALIZATIONS}")


def _fold(x, event_ndim: int):
    """(lead..., event...) -> ((B, event...), lead): convolutions take one batch axis."""
    lead = x.shape[: x.ndim - event_ndim]
    return x.reshape((-1, *x.shape[x.ndim - event_ndim:])), lead


_DN = ("NHWC", "HWIO", "NHWC")


def _strided_conv(u, w, strides):
    """The "SAME" strided convolution whose transpose is ``conv_transpose`` (kernel in its own layout)."""
    return jax.lax.conv_general_dilated(u, w, strides, "SAME", dimension_numbers=_DN)


def _transposed_kernel(kernel):
    """conv_transpose's kernel (k, k, C_in, C_out), un-flipped as in flax/lax.conv_transpose -> the kernel
    (k, k, C_out, C_in) of the strided convolution it is the transpose of (an involution)."""
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_transpose(x, kernel, strides):
    """flax.linen.ConvTranspose's computation (padding "SAME", transpose_kernel=False), the same numbers,
    with a hand-written gradient. y = S^T x where S is the "SAME" strided convolution with kernel
    ``_transposed_kernel(kernel)``, so dL/dx = S(dL/dy) and dL/dkernel is the kernel gradient of S at input
    dL/dy and output cotangent x. Why: XLA:CPU computes the kernel gradient of lax.conv_transpose
    (a convolution of the lhs-dilated input) ~25x slower than a strided convolution's kernel gradient
    (0.5 against 12 GFLOP per CPU-second at 7x7x32 -> 14x14x32, batch 500, measured 2026-11-30;
    benchmarks/README.md, "Conv VAE")."""
    return jax.lax.conv_transpose(x, kernel, strides, "SAME", dimension_numbers=_DN)


def _conv_transpose_fwd(x, kernel, strides):
    return conv_transpose(x, kernel, strides), (x, kernel)


def _conv_transpose_bwd(strides, res, g):
    x, kernel = res
    w = _transposed_kernel(kernel)
    # <y, g> = <S(g, w), x>: dL/dx = S(g, w) (the primal below), dL/dkernel = S's kernel vjp at cotangent x
    dx, vjp = jax.vjp(lambda w: _strided_conv(g, w, strides), w)
    (dw,) = vjp(x.astype(g.dtype))
    return dx.astype(x.dtype), _transposed_kernel(dw).astype(kernel.dtype)


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nn.Module):
    """nn.ConvTranspose(features, (k, k), (s, s)) (padding "SAME") with the same parameters ("kernel"
    (k, k, C_in, C_out) lecun-normal, "bias" zeros: the same values for the same key) and outputs, computed
    by ``conv_transpose`` (a fast kernel gradient on CPU)."""

    features: int
    kernel: int
    stride: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.linear.default_kernel_init,
                            (self.kernel, self.kernel, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return conv_transpose(x, kernel, (self.stride, self.stride)) + bias


def gate(y):
    """(..., 2 C) -> (..., C): the first C channels (filter) times the sigmoid of the last C (gate)."""
    f, g = jnp.split(y, 2, axis=-1)
    return f * nn.sigmoid(g)


class GatedConv(nn.Module):
    """(W_f * x + b_f) * sigmoid(W_g * x + b_g) (van den Berg et al. 2018); ``transpose`` for the
    transposed convolution. Parameters: one "conv" kernel (k, k, C_in, 2 C_out) and bias (2 C_out)."""

    features: int
    kernel: int
    stride: int = 1
    transpose: bool = False

    @nn.compact
    def __call__(self, x):
        if self.transpose:
            y = ConvTranspose(2 * self.features, self.kernel, self.stride, name="conv")(x)
        else:
            y = nn.Conv(2 * self.features, (self.kernel, self.kernel), (self.stride, self.stride), name="conv")(x)
        return gate(y)


class GatedDense(nn.Module):
    """(W_f x + b_f) * sigmoid(W_g x + b_g): one "dense" kernel of 2 ``features`` outputs."""

    features: int

    @nn.compact
    def __call__(self, x):
        return gate(nn.Dense(2 * self.features, name="dense")(x))


class ResBlock(nn.Module):
    """h + conv(act(norm(conv(act(norm(h)))))): a pre-activation residual block (He et al. 2016)."""

    kernel: int
    act: str
    norm: str

    @nn.compact
    def __call__(self, h):
        width = h.shape[-1]
        r = activation(self.act)(_norm(self.norm, "norm_0")(h))
        r = nn.Conv(width, (self.kernel, self.kernel), name="conv_0")(r)
        r = activation(self.act)(_norm(self.norm, "norm_1")(r))
        r = nn.Conv(width, (self.kernel, self.kernel), name="conv_1",
                    kernel_init=nn.initializers.variance_scaling(0.1, "fan_in", "truncated_normal"))(r)
        return h + r


class ConvEncoder(nn.Module):
    """x (..., H, W, C) -> (mu, logvar, flow_params), the same outputs as networks.Encoder."""

    widths: Sequence[int]
    latent_dim: int
    kernel: int = 3
    strides: Sequence[int] = (2, 2)
    act: str = "relu"
    norm: str = "none"
    residual: bool = False
    flow_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    flow_length: int = 0
    gated: bool = False

    @nn.compact
    def __call__(self, x):
        h, lead = _fold(x, 3)
        for i, (width, stride) in enumerate(zip(self.widths, self.strides)):
            if self.gated:
                h = _norm(self.norm, f"norm_{i}")(GatedConv(width, self.kernel, stride, name=f"gated_{i}")(h))
                continue
            h = nn.Conv(width, (self.kernel, self.kernel), (stride, stride), name=f"conv_{i}")(h)
            if self.residual:
                h = ResBlock(self.kernel, self.act, self.norm, name=f"res_{i}")(h)
            else:
                h = activation(self.act)(_norm(self.norm, f"norm_{i}")(h))
        if self.residual:
            h = activation(self.act)(h)
        h = h.reshape(*lead, -1)
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


class PixelHead(nn.Module):
    """A k-channel output convolution plus a per-pixel bias (H, W, k) (params "kernel", "bias")."""

    channels: int
    kernel: int
    zero_init: bool

    @nn.compact
    def __call__(self, h):
        init = nn.initializers.zeros if self.zero_init else nn.linear.default_kernel_init
        y = nn.Conv(self.channels, (self.kernel, self.kernel), use_bias=False, kernel_init=init, name="conv")(h)
        bias = self.param("bias", nn.initializers.zeros, (*h.shape[-3:-1], self.channels))
        return y + bias


class ConvDecoder(nn.Module):
    """z (..., d) -> the likelihood's parameters in image layout: one (..., H, W, k) array per head
    (a single head returns an array, several a tuple, as networks.Decoder)."""

    widths: Sequence[int]  # the encoder's widths; the decoder runs them in reverse
    x_shape: tuple[int, int, int]
    heads: tuple[tuple[str, int, bool], ...]
    kernel: int = 3
    strides: Sequence[int] = (2, 2)
    act: str = "relu"
    norm: str = "none"
    residual: bool = False
    output_act: str = "identity"
    gated: bool = False

    @nn.compact
    def __call__(self, z):
        h_img, w_img, _ = self.x_shape
        f = math.prod(self.strides)
        widths = tuple(reversed(tuple(self.widths)))
        strides = tuple(reversed(tuple(self.strides)))
        z, lead = _fold(z, 1)
        size = (h_img // f) * (w_img // f) * widths[0]
        if self.gated:
            h = GatedDense(size, name="gated_dense")(z)
        else:
            h = activation(self.act)(nn.Dense(size, name="dense")(z))
        h = h.reshape(-1, h_img // f, w_img // f, widths[0])
        for i, (width, stride) in enumerate(zip(widths, strides)):
            if self.gated:
                h = GatedConv(width, self.kernel, stride, transpose=True, name=f"gated_deconv_{i}")(h)
                h = _norm(self.norm, f"norm_{i}")(h)
                continue
            if self.residual:
                h = ResBlock(self.kernel, self.act, self.norm, name=f"res_{i}")(h)
            h = ConvTranspose(width, self.kernel, stride, name=f"deconv_{i}")(h)
            h = activation(self.act)(_norm(self.norm, f"norm_{i}")(h))
        outs = []
        for i, (name, width, zero_init) in enumerate(self.heads):
            if width % (h_img * w_img):
                raise ValueError(f"decoder head {name!r} of width {width} is not a whole number of channels "
                                 f"per pixel of a {h_img}x{w_img} image")
            y = PixelHead(width // (h_img * w_img), self.kernel, zero_init, name=name)(h)
            y = y.reshape(*lead, *y.shape[1:])
            outs.append(activation(self.output_act)(y) if i == 0 else y)
        return outs[0] if len(outs) == 1 else tuple(outs)


def image_fields(m, image_shape) -> dict:
    """VAE keyword arguments for the image fields of a model config ``m`` (model.network, conv_*,
    normalization, num_mixtures). ``x_shape`` is set only when needed: a conv network, or a likelihood
    that couples a pixel's channels (the mixture on colour images). A plain MLP model gets {} plus the
    defaults, so flat runs build exactly the VAE they built before these fields existed."""
    network = m.get("network", "mlp")
    fields = {"network": network}
    if network != "mlp":
        fields.update(conv_widths=tuple(m.conv_widths), conv_kernel=int(m.conv_kernel),
                      conv_strides=tuple(m.conv_strides), normalization=m.normalization)
    if m.get("num_mixtures") is not None:
        fields["num_mixtures"] = int(m.num_mixtures)
    colour_mixture = m.likelihood == "discretized_logistic_mixture" and image_shape and image_shape[-1] > 1
    if image_shape is not None and (network != "mlp" or colour_mixture):
        fields["x_shape"] = tuple(int(s) for s in image_shape)
    return fields
