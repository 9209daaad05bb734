"""Low-precision parameters (issue 6, points 4 and 6).

* updates have the parameters' dtype for float32, bfloat16 and float16 and every form of
  learning rate (Python float, NumPy scalar, JAX array, schedule), and applying them
  keeps it;
* with float16 or bfloat16 parameters an exactly zero gradient gives finite, exactly
  zero updates for every optimizer, also with the tiny ``eps`` of PyTorch and optax
  (1e-8 and 1e-10 underflow in float16; gbopt keeps its statistics in float32);
* 100 random small-gradient steps (subnormal float16 values and exact zeros included)
  stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS

import gbopt
import gbopt.pytorch

LOW = {"float16": jnp.float16, "bfloat16": jnp.bfloat16}
DTYPES = {"float32": jnp.float32, **LOW}

# gbopt.pytorch's optimizers with PyTorch's defaults (eps 1e-8, or 1e-10 for Adagrad), no
# weight decay (which makes the update of a zero gradient -lr * wd * w, by design).
TORCH = {
    "SGD": lambda: gbopt.pytorch.SGD(lr=1e-2, momentum=0.9, nesterov=True),
    "Adagrad": lambda: gbopt.pytorch.Adagrad(lr=1e-2),
    "RMSprop": lambda: gbopt.pytorch.RMSprop(lr=1e-2, centered=True),
    "Adam": lambda: gbopt.pytorch.Adam(lr=1e-3),
    "NAdam": lambda: gbopt.pytorch.NAdam(lr=1e-3),
    "Adamax": lambda: gbopt.pytorch.Adamax(lr=1e-3),
}

# The table's optimizers and the same rules with other frameworks' (tiny) defaults.
WITH_TINY_EPS = {
    **OPTIMIZERS,
    "adagrad_eps_1e-10": lambda: gbopt.adagrad(1e-2, eps=1e-10),  # PyTorch's default
    "rmsprop_eps_1e-8": lambda: gbopt.rmsprop(1e-2, decay=0.99, eps=1e-8),  # optax's
    "rmsprop_nesterov_eps_1e-8": lambda: gbopt.rmsprop_nesterov(1e-3, eps=1e-8),
    "adam_eps_1e-8_b2_0.99": lambda: gbopt.adam(1e-3, b2=0.99, eps=1e-8),
    "optax_adagrad_rule": lambda: gbopt.adagrad(
        1e-2, initial_accumulator_value=0.1, eps_in_sqrt=True
    ),
    "rmsprop_centered": lambda: gbopt.rmsprop(1e-2, eps=1e-8, centered=True, momentum=0.9),
    **{f"pytorch.{name}": make for name, make in TORCH.items()},
}


def _params(dtype):
    return {
        "w": jnp.asarray([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]], dtype),
        "b": jnp.asarray([1.0, -1.0], dtype),
        "s": jnp.asarray(0.75, dtype),
    }


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", WITH_TINY_EPS)
def test_zero_gradient_gives_exactly_zero_finite_updates(name, dtype):
    dtype = LOW[dtype]
    tx = WITH_TINY_EPS[name]()
    params = _params(dtype)
    state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):  # the first step and the ones after it
        updates, state = tx.update(zeros, state, params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == dtype
            assert np.all(np.asarray(u, np.float32) == 0.0)
        new = gbopt.apply_updates(params, updates)
        for p, q in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
            assert p.dtype == dtype
            np.testing.assert_array_equal(np.asarray(p, np.float32), np.asarray(q, np.float32))
    assert all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(state)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )


def _small_gradients(dtype, steps, seed=0):
    """Gradients of magnitude 1e-8 to 1e-2 (subnormal in float16), a tenth exactly zero."""
    rng = np.random.default_rng(seed)

    def leaf(p):
        shape = (steps, *p.shape)
        g = rng.normal(size=shape) * 10.0 ** rng.uniform(-8, -2, size=shape)
        g[rng.uniform(size=shape) < 0.1] = 0.0
        return jnp.asarray(g, dtype)

    return jax.tree.map(leaf, _params(dtype))


SMALL_STEPS = {
    **OPTIMIZERS,
    "pytorch.Adam": TORCH["Adam"],  # float16 Adam and RMSprop: optax #1754, #1784
    "pytorch.RMSprop": TORCH["RMSprop"],
}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name", SMALL_STEPS)
def test_hundred_small_gradient_steps_stay_finite(name, dtype):
    dtype = LOW[dtype]
    tx = SMALL_STEPS[name]()
    params = _params(dtype)
    grads = _small_gradients(dtype, steps=100)
    assert any(  # the draw does reach the subnormal float16 range
        bool(jnp.any((g != 0) & (jnp.abs(g.astype(jnp.float32)) < 6.1e-5)))
        for g in jax.tree.leaves(grads)
    )

    def step(carry, g):
        params, state = carry
        updates, state = tx.update(g, state, params)
        return (gbopt.apply_updates(params, updates), state), updates

    (params, state), updates = jax.jit(lambda c, g: jax.lax.scan(step, c, g))(
        (params, tx.init(params)), grads
    )
    for x in jax.tree.leaves((params, state, updates)):
        if jnp.issubdtype(x.dtype, jnp.inexact):
            assert bool(jnp.all(jnp.isfinite(x)))
    for p in jax.tree.leaves((params, updates)):
        assert p.dtype == dtype


def _exponential(count):
    return 0.1 * 0.9**count


LEARNING_RATES = {
    "python float": 0.1,
    "numpy float32": np.float32(0.1),
    "numpy float64": np.float64(0.1),
    "jax float32": jnp.asarray(0.1, jnp.float32),
    "jax bfloat16": jnp.asarray(0.1, jnp.bfloat16),
    "schedule": _exponential,
    "optax schedule": optax.exponential_decay(0.1, 1, 0.9),
}

# Each optimizer with the learning rate given.
FACTORIES = {
    "sgd": lambda lr: gbopt.sgd(lr),
    "momentum": lambda lr: gbopt.momentum(lr, 0.9),
    "nesterov": lambda lr: gbopt.nesterov(lr, 0.9),
    "adagrad": lambda lr: gbopt.adagrad(lr),
    "rmsprop": lambda lr: gbopt.rmsprop(lr),
    "rmsprop_nesterov": lambda lr: gbopt.rmsprop_nesterov(lr),
    "adam": lambda lr: gbopt.adam(lr),
}


def _check_dtypes(tx, dtype):
    params = _params(dtype)
    state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the schedule's count moves
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), params)
        updates, state = tx.update(grads, state, params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(u)))
            assert bool(jnp.any(u != 0))
        params = gbopt.apply_updates(params, updates)
        for p in jax.tree.leaves(params):
            assert p.dtype == dtype


@pytest.mark.parametrize("lr", LEARNING_RATES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", FACTORIES)
def test_updates_have_the_params_dtype_for_every_learning_rate_form(name, dtype, lr):
    _check_dtypes(FACTORIES[name](LEARNING_RATES[lr]), DTYPES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_float64_learning_rates_under_x64_keep_the_params_dtype(dtype):
    with jax.enable_x64(True):
        for name, make in FACTORIES.items():
            for lr in (jnp.asarray(0.1, jnp.float64), np.float64(0.1), lambda c: 0.1 * 0.9**c):
                try:
                    _check_dtypes(make(lr), DTYPES[dtype])
                except AssertionError as error:
                    raise AssertionError(f"{name} with learning rate {lr!r}") from error


def test_updates_follow_the_gradients_under_jit():
    tx = gbopt.adam(jnp.asarray(1e-2))
    for dtype in DTYPES.values():
        params = _params(dtype)
        grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
        updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        for u in jax.tree.leaves(updates):
            assert u.dtype == dtype
