"""Haiku: a transform/apply training loop with a gbopt optimizer."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import gbopt


def _mlp(x):
    return hk.nets.MLP([32, 10])(x)


def test_haiku_transform_apply_loop_trains_an_mlp_on_digits():
    x, y = load_digits(return_X_y=True)
    x, y = jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y, jnp.int32)
    model = hk.without_apply_rng(hk.transform(_mlp))
    params = jax.jit(model.init)(jax.random.key(0), x[:1])
    tx = gbopt.chain(gbopt.clip_by_global_norm(10.0), gbopt.nesterov(0.1, momentum=0.9))
    opt_state = tx.init(params)

    def loss_fn(params):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gbopt.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(200):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    # Haiku's module names are the state's keys.
    trace = opt_state[1][1].trace
    assert sorted(trace) == ["mlp/~/linear_0", "mlp/~/linear_1"]
    assert trace["mlp/~/linear_0"]["w"].shape == (64, 32)
    assert np.all(np.isfinite(np.asarray(trace["mlp/~/linear_1"]["b"])))
