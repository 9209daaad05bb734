"""Per-statistic storage dtypes of the optimizers: narrow storage, float32 (or wider) arithmetic.

Each optimizer runs with float32 parameters and gradients and a bfloat16 statistic, against
a NumPy model that computes every step in float64 and rounds the stored statistic to
bfloat16 after each step (the update itself is computed before that rounding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import gbopt

BF16 = ml_dtypes.bfloat16
LR, MU, RHO, EPS = 0.1, 0.9, 0.9, 1e-6


def _bf16(x):
    return np.asarray(x, np.float64).astype(BF16).astype(np.float64)


def _model(name, grads):
    """Float64 steps with the statistic stored in bfloat16; returns the updates."""
    v = np.zeros_like(grads[0])
    r = np.zeros_like(grads[0])
    out = []
    for g in grads:
        if name in ("momentum", "nesterov"):
            v_new = MU * v - LR * g
            out.append(v_new if name == "momentum" else -LR * g + MU * v_new)
            v = _bf16(v_new)
        elif name == "adagrad":
            r_new = r + g * g
            out.append(-LR * g / (np.sqrt(r_new) + EPS))
            r = _bf16(r_new)
        elif name == "rmsprop":
            r_new = r + (1 - RHO) * (g * g - r)
            out.append(-LR * g / np.sqrt(r_new + EPS))
            r = _bf16(r_new)
        elif name == "rmsprop_nesterov":
            r_new = r + (1 - RHO) * (g * g - r)
            u = -LR * g / np.sqrt(r_new + EPS)
            v_new = MU * v + u  # the velocity stays float32 here
            out.append(u + MU * v_new)
            r = _bf16(r_new)
            v = v_new
    return out


CASES = {
    "momentum": lambda: gbopt.momentum(LR, MU, accumulator_dtype=jnp.bfloat16),
    "nesterov": lambda: gbopt.nesterov(LR, MU, accumulator_dtype=jnp.bfloat16),
    "adagrad": lambda: gbopt.adagrad(LR, EPS, nu_dtype=jnp.bfloat16),
    "rmsprop": lambda: gbopt.rmsprop(LR, RHO, EPS, nu_dtype=jnp.bfloat16),
    "rmsprop_nesterov": lambda: gbopt.rmsprop_nesterov(LR, RHO, MU, EPS, nu_dtype=jnp.bfloat16),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_storage_float32_arithmetic_matches_the_rounding_model(name):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(24,)) for _ in range(12)]
    tx = CASES[name]()
    params = {"w": jnp.zeros((24,), jnp.float32)}
    state = tx.init(params)
    stored = [x.dtype for x in jax.tree.leaves(state) if x.shape == (24,)]
    # rmsprop_nesterov's velocity keeps the default (float32); only nu is narrowed
    narrow = [jnp.bfloat16] if name != "rmsprop_nesterov" else [jnp.bfloat16, jnp.float32]
    assert sorted(map(str, stored)) == sorted(map(str, map(jnp.dtype, narrow)))
    step = jax.jit(tx.update)
    expected = _model(name, grads)
    for g, want in zip(grads, expected, strict=True):
        u, state = step({"w": jnp.asarray(g, jnp.float32)}, state, params)
        assert u["w"].dtype == jnp.float32
        # float32 arithmetic on the same bfloat16 state: float32 rounding only, relative to
        # the terms (up to about 1; a momentum step can cancel down to 1e-4): a few ulps of 1
        np.testing.assert_allclose(np.asarray(u["w"], np.float64), want, rtol=2e-6, atol=2.4e-7)
    # and the narrow storage is real: float32 storage gives other updates
    wide = {"momentum": gbopt.momentum(LR, MU), "adagrad": gbopt.adagrad(LR, EPS)}.get(name)
    if wide is not None:
        s = wide.init(params)
        for g in grads:
            u32, s = wide.update({"w": jnp.asarray(g, jnp.float32)}, s, params)
        assert np.max(np.abs(np.asarray(u32["w"]) - np.asarray(u["w"]))) > 1e-5


def test_centered_rmsprop_stores_both_statistics_narrow():
    tx = gbopt.rmsprop(LR, centered=True, nu_dtype=jnp.bfloat16)
    state = tx.init({"w": jnp.zeros((4,), jnp.float32)})
    arrays = [x for x in jax.tree.leaves(state) if x.shape == (4,)]
    assert len(arrays) == 2 and all(x.dtype == jnp.bfloat16 for x in arrays)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda d: gbopt.momentum(0.1, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.nesterov(0.1, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.adagrad(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.rmsprop(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.rmsprop_nesterov(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.trace(0.9, dtype=d), "dtype"),
        (lambda d: gbopt.ema(0.9, dtype=d), "dtype"),
        (lambda d: gbopt.accumulate_square(0.9, dtype=d), "dtype"),
    ],
)
def test_a_storage_dtype_that_is_not_floating_is_refused(build, name):
    for bad in (jnp.int32, jnp.bool_, "banana"):
        with pytest.raises(TypeError, match=f"`{name}` must be a floating-point dtype"):
            build(bad)
