"""Normalizing flows on the latent z, with their log-det-Jacobians.

A flow of length L is a stack of invertible maps z_k = f_k(z_{k-1}); the posterior density of the last
sample follows from the change of variables (Rezende & Mohamed, 2015, eq. 7):

    log q_L(z_L) = log q_0(z_0) - sum_{k=1}^{L} log |det df_k / dz_{k-1}|.

Each flow is a frozen object registered by name (``model.flow``) with ``param_shapes(dim)`` and
``layer(params, z) -> (f(z), log|det df/dz|)``. Parameters are dicts of arrays whose leading axis is the layer index; any further leading axes
(e.g. a batch axis for amortized flows) broadcast against the batch axes of ``z``.

Optional parts of the interface (the built-in planar and radial flows use none of them):

- ``global_params``: names of parameters that stay global (in ``params["flow"]``) even when the flow is
  amortized, e.g. IAF's MADE weights; the encoder's flow head outputs only the other names.
- ``init_params(key, length, dim, scale)``: the flow's own initialisation of all its parameters.
- ``uses_layer_index = True``: ``layer(params, z, index)`` also gets the layer's index (alternating
  orders in IAF and triangular Sylvester flows).

Options: the flow's dataclass fields (IAF's ``hidden`` and ``context``, Sylvester's ``variant``, ...) are
its options, set in the config under ``model.flow_options`` (jaxvae.vae.registry.build passes each flow
the ones it declares); ``HEAD_OPTIONS`` are options of every amortized flow, read by the encoder's head.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.vae.registry import FLOWS, build, register_flow

FlowParams = dict[str, jax.Array]

# Options of every amortized flow (model.flow_options), read by the encoder's flow head, not by the flow:
# init_scale: std of the head's kernel at init (bias 0): planar and Sylvester layers start near the
# identity (0.01 and 0.05 did not train better: benchmarks/README.md, flows);
# head_scale: the head's outputs = this constant x a Dense layer's (kernel init std init_scale / this, so
# the initial outputs do not change); under Adam, whose steps do not depend on the gradient's scale, the
# head's parameters then move the flow's parameters this many times as fast: a learning-rate multiplier
# for the flow head (1.0 = the layer as before).
HEAD_OPTIONS = {"init_scale": 1e-3, "head_scale": 1.0}
FLOWS.common_options.update(HEAD_OPTIONS)

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


def _reverse_if_odd(z: jax.Array, index) -> jax.Array:
    """z with its coordinates reversed on odd layers (alternating orders; |det| = 1)."""
    return jnp.where(jnp.asarray(index) % 2 == 1, z[..., ::-1], z)


# -- IAF (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016) ------------------------------
IAF_FORGET_BIAS = 2.0  # initial bias of s: sigma = sigmoid(2) = 0.88, close to the identity (Kingma et al. sec. 4)


def made_masks(dim: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """MADE masks (Germain et al. 2015) for the order 1..dim: input i has degree i, hidden unit j of a
    layer degree 1 + (j mod (dim - 1)); a connection is kept when the degree does not decrease, and the
    output layer keeps only strictly smaller degrees, so output i depends on z_{<i} alone."""
    deg_in = np.arange(1, dim + 1)
    degs = [deg_in] + [1 + (np.arange(h) % max(dim - 1, 1)) for h in hidden]
    masks = [(degs[i][:, None] <= degs[i + 1][None, :]).astype(np.float32) for i in range(len(hidden))]
    masks.append((degs[-1][:, None] < deg_in[None, :]).astype(np.float32))
    return masks


def iaf_step(params: FlowParams, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One IAF step in the order 1..d: [m, s] = MADE(z, context), sigma = sigmoid(s),
    z' = sigma * z + (1 - sigma) * m, log|det dz'/dz| = sum_i log sigma_i (the Jacobian is lower
    triangular: m_i, s_i depend on z_{<i} only).

    ``params``: w0 (d, H0), b0 (H0,), further w1, b1, ... between hidden layers, wm, ws (H, d), bm, bs (d,),
    and optionally wc (C, H0) with a per-example ``context`` (C,) from the encoder.
    """
    dim = z.shape[-1]
    n_hidden = sum(1 for k in params if k.startswith("w") and k[1:].isdigit())
    widths = tuple(params[f"b{i}"].shape[-1] for i in range(n_hidden))
    masks = made_masks(dim, widths)
    h = z
    for i in range(n_hidden):
        h = h @ (params[f"w{i}"] * masks[i]) + params[f"b{i}"]
        if i == 0 and "context" in params:
            h = h + jnp.einsum("...c,...ch->...h", params["context"], params["wc"])
        h = jax.nn.elu(h)
    m = h @ (params["wm"] * masks[-1]) + params["bm"]
    s = h @ (params["ws"] * masks[-1]) + params["bs"]
    sigma = jax.nn.sigmoid(s)
    return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s), axis=-1)


@register_flow("iaf")
@dataclasses.dataclass(frozen=True)
class IAF:
    """Inverse autoregressive flow layers (Kingma et al. 2016): ``iaf_step`` with MADE weights shared by
    all examples (global) and an optional per-example context h(x) of size ``context`` from the encoder's
    flow head; odd layers act on the reversed coordinates (alternating orders).

    Options (``model.flow_options``): ``hidden``, ``context``.
    """

    hidden: tuple[int, ...] = (64,)  # hidden widths of each layer's MADE network (global weights)
    context: int = 0  # size of the per-example context the encoder feeds each MADE (0 = none)
    uses_layer_index = True

    @property
    def global_params(self) -> tuple[str, ...]:
        return tuple(k for k in self.param_shapes(1) if k != "context")

    def param_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        widths = (dim,) + tuple(self.hidden)
        shapes = {}
        for i in range(len(self.hidden)):
            shapes[f"w{i}"] = (widths[i], widths[i + 1])
            shapes[f"b{i}"] = (widths[i + 1],)
        shapes.update(wm=(widths[-1], dim), ws=(widths[-1], dim), bm=(dim,), bs=(dim,))
        if self.context:
            shapes.update(wc=(self.context, self.hidden[0]), context=(self.context,))
        return shapes

    def init_params(self, key, length: int, dim: int, scale: float = 0.01) -> FlowParams:
        """Hidden weights N(0, 1/fan_in); output weights N(0, scale^2) (near-identity layers);
        bs = IAF_FORGET_BIAS; other biases 0; the (global) context N(0, scale^2)."""
        out = {}
        shapes = self.param_shapes(dim)
        for k, (name, shape) in zip(jax.random.split(key, len(shapes)), sorted(shapes.items())):
            full = (length,) + shape
            if name.startswith("b"):
                out[name] = jnp.full(full, IAF_FORGET_BIAS if name == "bs" else 0.0)
            elif name in ("wm", "ws", "context"):
                out[name] = scale * jax.random.normal(k, full)
            else:
                out[name] = jax.random.normal(k, full) / math.sqrt(shape[0])
        return out

    def layer(self, params: FlowParams, z: jax.Array, index=0) -> tuple[jax.Array, jax.Array]:
        z_out, log_det = iaf_step(params, _reverse_if_odd(z, index))
        return _reverse_if_odd(z_out, index), log_det


# -- Sylvester flows (van den Berg, Hasenclever, Tomczak & Welling 2018) ------------------------------
SYLVESTER_VARIANTS = ("orthogonal", "householder", "triangular")


def orthogonalize(q: jax.Array, iterations: int = 30) -> jax.Array:
    """Q with orthonormal columns from a (..., D, M) matrix by the iteration of Bjorck & Bowie (1971),
    Q <- Q (I + 1/2 (I - Q^T Q)), started from q / ||q||_F (all singular values <= 1, so it converges
    to the orthogonal polar factor; van den Berg et al. 2018, sec. 3.1)."""
    q = q / jnp.sqrt(jnp.sum(jnp.square(q), axis=(-2, -1), keepdims=True) + _TINY)
    eye = jnp.eye(q.shape[-1], dtype=q.dtype)

    def body(_, a):
        return a + 0.5 * a @ (eye - jnp.swapaxes(a, -1, -2) @ a)

    return jax.lax.fori_loop(0, iterations, body, q)


def householder_product(v: jax.Array) -> jax.Array:
    """Q = H_1 H_2 ... H_K with H_k = I - 2 v_k v_k^T / ||v_k||^2, from v of shape (..., K, D)."""
    dim = v.shape[-1]
    q = jnp.broadcast_to(jnp.eye(dim, dtype=v.dtype), v.shape[:-2] + (dim, dim))
    for k in range(v.shape[-2]):
        vk = v[..., k, :]
        vk = vk / jnp.sqrt(jnp.sum(jnp.square(vk), axis=-1, keepdims=True) + _TINY)
        q = q - 2.0 * (q @ vk[..., :, None]) * vk[..., None, :]  # q H_k
    return q


def _upper(raw: jax.Array, diag: jax.Array) -> jax.Array:
    """Upper-triangular matrix: the strict upper part of ``raw`` and ``diag`` on the diagonal."""
    m = raw.shape[-1]
    return raw * np.triu(np.ones((m, m), np.float32), 1) + diag[..., None] * np.eye(m, dtype=np.float32)


def sylvester(params: FlowParams, z: jax.Array, q: jax.Array | None, reverse=False):
    """One Sylvester layer f(z) = z + Q R h(R~ Q^T z + b), h = tanh, R and R~ upper triangular (M x M)
    with diagonals r_ii = tanh(d1_i), r~_ii = tanh(d2_i), so r_ii r~_ii > -1 = -1/sup|h'| keeps f
    invertible (van den Berg et al. 2018, theorem 2). With Q^T Q = I,
    log|det df/dz| = sum_i log(1 + h'(a_i) r~_ii r_ii), a = R~ Q^T z + b.

    ``q``: (..., D, M) with orthonormal columns, or None for the permutation Q (identity, or the reversal
    when ``reverse``: the triangular variant).
    """
    r1 = _upper(params["r1"], jnp.tanh(params["d1"]))
    r2 = _upper(params["r2"], jnp.tanh(params["d2"]))
    if q is None:
        qz = jnp.where(reverse, z[..., ::-1], z)
    else:
        qz = jnp.einsum("...dm,...d->...m", q, z)
    a = jnp.einsum("...ij,...j->...i", r2, qz) + params["b"]
    h = jnp.tanh(a)
    rh = jnp.einsum("...ij,...j->...i", r1, h)
    step = jnp.where(reverse, rh[..., ::-1], rh) if q is None else jnp.einsum("...dm,...m->...d", q, rh)
    diag = jnp.tanh(params["d1"]) * jnp.tanh(params["d2"])
    log_det = jnp.sum(jnp.log1p((1.0 - jnp.square(h)) * diag), axis=-1)
    return z + step, log_det


@register_flow("sylvester")
@dataclasses.dataclass(frozen=True)
class Sylvester:
    """Sylvester normalizing flows (van den Berg et al. 2018): ``sylvester`` above with Q from
    ``variant`` (options in ``model.flow_options``: ``variant``, ``columns``, ``reflections``,
    ``iterations``):

    - orthogonal: Q (D x M, M = ``columns`` or D) by ``orthogonalize`` of an amortized D x M matrix;
    - householder: Q = product of ``reflections`` Householder reflections of amortized vectors;
    - triangular: Q = I on even layers and the reversal permutation on odd layers (M = D).

    Per layer: r1, r2 (M, M) (strict upper parts used), d1, d2, b (M,), and q (D, M) or v (K, D).
    """

    variant: str = "orthogonal"  # orthogonal | householder | triangular (Q's form)
    columns: int = 0  # orthogonal: columns M of Q (1..latent_dim; 0 = latent_dim)
    reflections: int = 4  # householder: Householder reflections per layer
    iterations: int = 30  # orthogonal: Bjorck iterations orthogonalizing Q
    uses_layer_index = True

    def __post_init__(self):
        if self.variant not in SYLVESTER_VARIANTS:
            raise ValueError(f"sylvester variant {self.variant!r} is not one of {SYLVESTER_VARIANTS}")

    def num_columns(self, dim: int) -> int:
        return self.columns if (self.variant == "orthogonal" and self.columns) else dim

    def param_shapes(self, dim: int) -> dict[str, tuple[int, ...]]:
        m = self.num_columns(dim)
        shapes = {"r1": (m, m), "r2": (m, m), "d1": (m,), "d2": (m,), "b": (m,)}
        if self.variant == "orthogonal":
            shapes["q"] = (dim, m)
        elif self.variant == "householder":
            shapes["v"] = (self.reflections, dim)
        return shapes

    def q_matrix(self, params: FlowParams):
        if self.variant == "orthogonal":
            return orthogonalize(params["q"], self.iterations)
        if self.variant == "householder":
            return householder_product(params["v"])
        return None

    def layer(self, params: FlowParams, z: jax.Array, index=0) -> tuple[jax.Array, jax.Array]:
        return sylvester(params, z, self.q_matrix(params), reverse=jnp.asarray(index) % 2 == 1)


def get(kind, model=None):
    """The flow object for a registered name (or the object itself); with ``model``, a registered class
    is built with the options of ``model.flow_options`` it declares (jaxvae.vae.registry.build), without
    one with its defaults."""
    if not isinstance(kind, str):
        return kind
    if model is None:
        entry = FLOWS.get(kind)
        return entry() if isinstance(entry, type) else entry
    return build(FLOWS, kind, model)


def global_names(flow) -> tuple[str, ...]:
    """Parameter names the flow keeps global even when amortized (none for planar and radial)."""
    return tuple(getattr(get(flow), "global_params", ()))


def amortized_shapes(flow, dim: int) -> dict[str, tuple[int, ...]]:
    """Per-layer shapes of the parameters an amortized flow's encoder head outputs."""
    keep = set(global_names(flow))
    return {k: v for k, v in get(flow).param_shapes(dim).items() if k not in keep}


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
    flow = get(kind)
    layer = flow.layer
    init = (z, jnp.zeros(jnp.shape(z)[:-1], dtype=jnp.result_type(z)))
    if getattr(flow, "uses_layer_index", False):
        length = jax.tree_util.tree_leaves(params)[0].shape[0]

        def indexed_step(carry, xs):
            z, total = carry
            z, log_det = layer(xs[0], z, xs[1])
            return (z, total + log_det), None

        (z, total), _ = jax.lax.scan(indexed_step, init, (params, jnp.arange(length)))
        return z, total

    def step(carry, layer_params):
        z, total = carry
        z, log_det = layer(layer_params, z)
        return (z, total + log_det), None

    (z, total), _ = jax.lax.scan(step, init, params)
    return z, total


LAYERS = {"planar": planar, "radial": radial}  # the single-layer maps, by name (tests, pictures)
