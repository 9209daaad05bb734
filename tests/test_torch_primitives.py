"""The primitives PyTorch's rules need, each against a NumPy float64 model (and optax)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt

_rng = np.random.default_rng(1)
GRADS = [
    {"w": _rng.normal(size=(2, 3)), "b": _rng.normal(size=(4,)) * 10.0 ** (-k % 3)}
    for k in range(30)
]
PARAMS = {"w": np.zeros((2, 3)), "b": np.zeros(4)}


def outputs(tx, grads=GRADS, dtype=jnp.float64):
    """The transform's output for each gradient of ``grads``, as float64 NumPy trees."""
    params = jax.tree.map(lambda x: jnp.asarray(x, dtype), PARAMS)
    state = tx.init(params)
    step = jax.jit(lambda g, s: tx.update(g, s, params))
    out = []
    for g in grads:
        u, state = step(jax.tree.map(lambda x: jnp.asarray(x, dtype), g), state)
        out.append(jax.tree.map(lambda x: np.asarray(x, np.float64), u))
    return out, state


def assert_trees_close(got, want, tol=1e-13):
    for g, w in zip(got, want, strict=True):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=tol, atol=tol)


def test_scale_by_schedule_reads_the_count_from_zero_like_optax():
    schedule = optax.linear_schedule(1.0, 0.0, 20)
    with jax.enable_x64(True):
        got, state = outputs(gbopt.scale_by_schedule(schedule))
        # gbopt hands schedules an int64 count under x64 (float64 values); optax an int32.
        want, _ = outputs(optax.scale_by_schedule(lambda c: schedule(c.astype(jnp.int64))))
        int32, _ = outputs(optax.scale_by_schedule(schedule))
        shared, _ = outputs(
            gbopt.with_step_count(lambda t: gbopt.scale_by_schedule(schedule, step=t))
        )
    assert_trees_close(got, want, 0)
    assert_trees_close(shared, want, 0)
    with pytest.raises(AssertionError):  # float32 schedule values: 1e-8 relative
        assert_trees_close(got, int32, 1e-10)
    assert isinstance(state, gbopt.StepCountState) and int(state.count) == len(GRADS)


def test_scale_by_schedule_rejects_a_constant():
    with pytest.raises(TypeError, match="`step_size_fn` must be a schedule.*gbopt.scale"):
        gbopt.scale_by_schedule(0.5)


def test_running_max_is_the_largest_input_so_far():
    grads = [{k: np.abs(v) for k, v in g.items()} for g in GRADS]
    with jax.enable_x64(True):
        got, state = outputs(gbopt.running_max(), grads)
    running = {k: np.zeros_like(v) for k, v in PARAMS.items()}
    want = []
    for g in grads:
        running = {k: np.maximum(running[k], g[k]) for k in g}
        want.append(running)
    assert_trees_close(got, want, 0)
    assert isinstance(state, gbopt.RunningMaxState)
    assert_trees_close([jax.tree.map(np.asarray, state.maximum)], [want[-1]], 0)


@pytest.mark.parametrize("r0", [0.0, 0.3])
def test_accumulate_centered_square_is_the_moving_variance(r0):
    rho = 0.9
    with jax.enable_x64(True):
        got, state = outputs(gbopt.accumulate_centered_square(rho, initial_accumulator_value=r0))
    m = {k: np.zeros_like(v) for k, v in PARAMS.items()}
    r = {k: np.full_like(v, r0) for k, v in PARAMS.items()}
    want = []
    for g in GRADS:
        m = {k: rho * m[k] + (1 - rho) * g[k] for k in g}
        r = {k: rho * r[k] + (1 - rho) * g[k] ** 2 for k in g}
        want.append({k: r[k] - m[k] ** 2 for k in g})
    assert_trees_close(got, want, 1e-12)
    assert isinstance(state, gbopt.AccumulateCenteredSquareState)


def test_accumulate_centered_square_clamps_a_negative_variance_at_zero():
    tx = gbopt.accumulate_centered_square(0.9)
    params = jnp.zeros(2)
    state = gbopt.AccumulateCenteredSquareState(mu=jnp.ones(2), nu=jnp.full(2, 0.5))
    out, state = tx.update(jnp.ones(2), state, params)  # r - m² = 0.55 - 1 < 0
    assert np.all(np.asarray(state.nu) - np.asarray(state.mu) ** 2 < 0)
    np.testing.assert_array_equal(out, 0.0)


def test_accumulate_inf_norm_puts_eps_inside_the_max():
    rho, eps = 0.99, 1e-3
    with jax.enable_x64(True):
        got, _ = outputs(gbopt.accumulate_inf_norm(rho, eps=eps))
    n = {k: np.zeros_like(v) for k, v in PARAMS.items()}
    want = []
    for g in GRADS:
        n = {k: np.maximum(rho * n[k], np.abs(g[k]) + eps) for k in g}
        want.append(n)
    assert_trees_close(got, want, 0)


def _nadam_numerator(b1, psi, grads):
    """PyTorch's NAdam numerator in NumPy float64 (torch/optim/nadam.py, single tensor)."""
    m = {k: np.zeros_like(v) for k, v in PARAMS.items()}
    product, out = 1.0, []
    for t, g in enumerate(grads, start=1):
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        product *= mu
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in g}
        out.append(
            {
                k: (1 - mu) / (1 - product) * g[k] + mu_next / (1 - product * mu_next) * m[k]
                for k in g
            }
        )
    return out


@pytest.mark.parametrize("psi", [4e-3, 0.5, math.inf])
def test_nadam_momentum_is_torchs_numerator(psi):
    with jax.enable_x64(True):
        got, state = outputs(gbopt.nadam_momentum(0.9, psi))
    assert_trees_close(got, _nadam_numerator(0.9, psi, GRADS), 1e-12)
    assert isinstance(state, gbopt.StepCountState)
    assert isinstance(state.inner_state, gbopt.NadamMomentumState)
    assert state.inner_state.mu_product.dtype == jnp.float64


def test_nadam_momentum_with_infinite_decay_is_optax_nadam():
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    tx = gbopt.with_step_count(
        lambda t: gbopt.chain(
            gbopt.divide(
                gbopt.nadam_momentum(b1, math.inf, step=t),
                gbopt.chain(
                    gbopt.accumulate_square(b2),
                    gbopt.bias_correction(b2, step=t),
                    gbopt.sqrt(),
                    gbopt.add(eps),
                ),
            ),
            gbopt.scale_by_learning_rate(lr, step=t),
        )
    )
    with jax.enable_x64(True):
        got, _ = outputs(tx)
        want, _ = outputs(optax.nadam(lr, b1, b2, eps))
    assert_trees_close(got, want, 1e-12)


def test_nadam_momentum_product_is_float32_for_float32_params():
    with jax.enable_x64(False):
        _, state = outputs(gbopt.nadam_momentum(0.9), GRADS[:3], dtype=jnp.float32)
    assert state.inner_state.mu_product.dtype == jnp.float32
    assert state.inner_state.mu["w"].dtype == jnp.float32


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: gbopt.accumulate_inf_norm(1.0), "`decay` must be in"),
        (lambda: gbopt.accumulate_inf_norm(0.9, eps=-1.0), "`eps`"),
        (lambda: gbopt.accumulate_centered_square(-0.1), "`decay` must be in"),
        (lambda: gbopt.accumulate_centered_square(0.9, initial_accumulator_value=-1), "`initial"),
        (lambda: gbopt.nadam_momentum(1.5), "`b1` must be in"),
        (lambda: gbopt.nadam_momentum(0.9, -math.inf), "`momentum_decay`"),
    ],
)
def test_arguments_are_checked(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "tx",
    [
        gbopt.running_max(),
        gbopt.accumulate_centered_square(0.9),
        gbopt.accumulate_inf_norm(0.9),
        gbopt.nadam_momentum(0.9),
    ],
    ids=["running_max", "centered", "inf_norm", "nadam"],
)
def test_state_mismatch_names_the_path(tx):
    state = tx.init({"a": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"updates\['a'\] has shape \(3,\)"):
        tx.update({"a": jnp.zeros(3)}, state)


def test_bfloat16_updates_keep_float32_statistics():
    params = {"w": jnp.zeros(4, jnp.bfloat16)}
    for tx in (gbopt.accumulate_centered_square(0.999), gbopt.accumulate_inf_norm(0.999)):
        state = tx.init(params)
        out, state = tx.update({"w": jnp.ones(4, jnp.bfloat16)}, state)
        assert out["w"].dtype == jnp.bfloat16
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state))
