"""Mixed precision on CPU: train a small digits VAE in float32 and with bfloat16 matmuls (same init), then the
evaluation bias of bfloat16 matmuls on the float32-trained model (docs/mixed_precision.md). ~3-4 min idle."""
import time, jax, jax.numpy as jnp, numpy as np, optax
from jaxvae.vae.model import VAE
from jaxvae.vae import objectives as O
from jaxvae.vae.evaluation import iwae_bound_chunked
from jaxvae.data import load_dataset
ds = load_dataset("digits")
x_tr = (ds.train > 0.5).astype(np.float32); x_te = (ds.test > 0.5).astype(np.float32)
def train(dtype, steps=1500, seed=0):
    m = VAE(x_dim=64, latent_dim=8, encoder_hidden=(128, 128), decoder_hidden=(128, 128), compute_dtype=dtype)
    p = m.init(jax.random.key(seed))
    tx = optax.adam(3e-3); s = tx.init(p)
    loss = O.make_loss_fn(m, "iwae", k=5)
    @jax.jit
    def step(p, s, i):
        idx = jax.random.choice(jax.random.fold_in(jax.random.key(seed + 1), i), x_tr.shape[0], (50,), replace=False)
        (l, _), g = jax.value_and_grad(loss, has_aux=True)(p, jnp.asarray(x_tr)[idx], jax.random.fold_in(jax.random.key(seed + 2), i))
        u, s = tx.update(g, s, p); return optax.apply_updates(p, u), s, l
    for i in range(steps):
        p, s, l = step(p, s, i)
    return m, p
def ev(m, p, k=500):
    f = jax.jit(iwae_bound_chunked, static_argnums=(0, 4, 5))
    return np.asarray(f(m, p, jnp.asarray(x_te), jax.random.key(9), k, 100))
t = time.time()
m32, p32 = train("float32"); m16, p16 = train("bfloat16")
e32 = ev(m32, p32); e16_trained = ev(m32, p16)
e32_b = ev(m32, p32); bias = ev(m16, p32) - e32
elbo32 = ev(m32, p32, 1)
print(f"IWAE_500 f32-trained {e32.mean():.3f}  bf16-trained (eval f32) {e16_trained.mean():.3f}  diff {e16_trained.mean()-e32.mean():+.3f}")
print(f"eval bias of bf16 matmuls on the f32 model: mean {bias.mean():+.4f} nats, per-example sd {bias.std():.4f}, n={len(bias)}")
# seed spread in f32
m2, p2 = train("float32", seed=3); e2 = ev(m2, p2)
print(f"f32 seed spread (seed 0 vs 3): {e2.mean()-e32.mean():+.3f}; {time.time()-t:.0f}s")
