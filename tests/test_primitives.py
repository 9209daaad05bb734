"""The primitives on hand-worked values."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt

G = jnp.array([1.0, -2.0, 4.0])


def _updates(tx, grads_seq, params=None):
    state = tx.init(grads_seq[0])
    out = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        out.append(u)
    return out, state


def test_scale():
    (u,), _ = _updates(gbopt.scale(-0.5), [G])
    np.testing.assert_allclose(u, [-0.5, 1.0, -2.0])


def test_scale_by_learning_rate_flips_the_sign():
    (u,), _ = _updates(gbopt.scale_by_learning_rate(0.1), [G])
    np.testing.assert_allclose(u, [-0.1, 0.2, -0.4], rtol=1e-6)
    (u,), _ = _updates(gbopt.scale_by_learning_rate(0.1, flip_sign=False), [G])
    np.testing.assert_allclose(u, [0.1, -0.2, 0.4], rtol=1e-6)


def test_scale_by_learning_rate_reads_a_schedule_at_the_number_of_previous_updates():
    tx = gbopt.scale_by_learning_rate(lambda count: 1.0 / (1.0 + count))
    us, state = _updates(tx, [G, G, G])
    np.testing.assert_allclose(us[0], -G, rtol=1e-6)
    np.testing.assert_allclose(us[1], -G / 2, rtol=1e-6)
    np.testing.assert_allclose(us[2], -G / 3, rtol=1e-6)
    assert state.count == 3


def test_add_and_sqrt():
    (u,), _ = _updates(gbopt.chain(gbopt.add(5.0), gbopt.sqrt()), [G])
    np.testing.assert_allclose(u, [math.sqrt(6), math.sqrt(3), 3.0], rtol=1e-6)


def test_trace_is_the_velocity():
    us, state = _updates(gbopt.trace(0.5), [G, G, 2 * G])
    np.testing.assert_allclose(us[0], G)
    np.testing.assert_allclose(us[1], 1.5 * G)
    np.testing.assert_allclose(us[2], 0.75 * G + 2 * G)
    np.testing.assert_allclose(state.trace, 2.75 * G)


def test_trace_nesterov_returns_update_plus_decayed_velocity():
    us, state = _updates(gbopt.trace(0.5, nesterov=True), [G, G])
    np.testing.assert_allclose(us[0], G + 0.5 * G)  # v1 = g
    np.testing.assert_allclose(us[1], G + 0.5 * 1.5 * G)  # v2 = 1.5 g
    np.testing.assert_allclose(state.trace, 1.5 * G)


def test_ema_and_its_debiased_form():
    us, state = _updates(gbopt.ema(0.75), [G, 3 * G])
    np.testing.assert_allclose(us[0], 0.25 * G)
    np.testing.assert_allclose(us[1], 0.75 * 0.25 * G + 0.25 * 3 * G)
    np.testing.assert_allclose(state.mu, us[1])
    us, _ = _updates(gbopt.ema(0.75, debias=True), [G, 3 * G])
    np.testing.assert_allclose(us[0], G, rtol=1e-6)  # a constant is its own debiased average
    np.testing.assert_allclose(us[1], (0.1875 + 0.75) * G / (1 - 0.75**2), rtol=1e-6)


def test_accumulate_square_sum_and_average():
    us, state = _updates(gbopt.accumulate_square(), [G, 2 * G])
    np.testing.assert_allclose(us[1], 5 * G**2)
    np.testing.assert_allclose(state.nu, 5 * G**2)
    us, _ = _updates(gbopt.accumulate_square(0.5), [G, 2 * G])
    np.testing.assert_allclose(us[0], 0.5 * G**2)
    np.testing.assert_allclose(us[1], 0.25 * G**2 + 0.5 * 4 * G**2)
    us, _ = _updates(gbopt.accumulate_square(initial_accumulator_value=0.1), [G])
    np.testing.assert_allclose(us[0], 0.1 + G**2, rtol=1e-6)


def test_bias_correction_uses_the_step_power():
    us, state = _updates(gbopt.bias_correction(0.5), [G, G, G])
    for t, u in enumerate(us, start=1):
        np.testing.assert_allclose(u, G / (1 - 0.5**t), rtol=1e-6)
    assert isinstance(state, gbopt.StepCountState) and state.count == 3
    # Inside a step owner it keeps no count of its own: the owner hands it the step.
    tx = gbopt.with_step_count(gbopt.bias_correction(0.5))
    state = tx.init(G)
    assert state.inner_state == ()
    for _ in range(3):
        u, state = tx.update(G, state)
    np.testing.assert_allclose(u, G / (1 - 0.125), rtol=1e-6)
    assert state.inner_state == () and state.count == 3
    # The step is data from the owner, never a constant baked in at construction.
    with pytest.raises(TypeError, match="`step` of bias_correction is set by gbopt.with_step"):
        gbopt.bias_correction(0.5, step=jnp.asarray(3))


def test_bias_correction_in_float32_tracks_float64():
    """-expm1(t log b) with log b from float64: ~1e-7 relative, where 1 - f32(b)**t is ~1e-5 off."""
    t = jnp.arange(1, 201)
    ours = jax.vmap(lambda t: gbopt._numerics.one_minus_power(0.999, t, jnp.float32))(t)
    exact = 1 - 0.999 ** np.arange(1, 201, dtype=np.float64)
    naive = 1 - np.float32(0.999) ** np.arange(1, 201).astype(np.float32)
    assert np.max(np.abs(np.asarray(ours, np.float64) / exact - 1)) < 5e-7
    assert np.max(np.abs(naive.astype(np.float64) / exact - 1)) > 5e-6


def test_clip_by_global_norm():
    tree = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # norm 5
    u, _ = gbopt.clip_by_global_norm(1.0).update(tree, ())
    np.testing.assert_allclose(u["a"], [0.6], rtol=1e-6)
    np.testing.assert_allclose(u["b"], [0.8], rtol=1e-6)
    u, _ = gbopt.clip_by_global_norm(10.0).update(tree, ())
    chex.assert_trees_all_equal(u, tree)
    zero = {"a": jnp.zeros(2)}
    u, _ = gbopt.clip_by_global_norm(1.0).update(zero, ())
    chex.assert_trees_all_equal(u, zero)
    np.testing.assert_allclose(gbopt.global_norm(tree), 5.0)


def test_add_decayed_weights_with_a_mask():
    params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    grads = {"w": jnp.array([0.5, 0.5]), "b": jnp.array([0.5])}
    tx = gbopt.add_decayed_weights(0.1, mask={"w": True, "b": False})
    u, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(u["w"], [0.6, 0.7], rtol=1e-6)
    np.testing.assert_allclose(u["b"], [0.5])
    with pytest.raises(ValueError, match=r"`weight_decay` needs the parameters"):
        tx.update(grads, tx.init(params))


def test_apply_updates_keeps_dtypes_and_passes_none_through():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2), "c": None, "d": jnp.ones(1)}
    updates = {
        "a": jnp.full(2, 0.5, jnp.float32),
        "b": jnp.full(2, 0.5, jnp.float32),
        "c": None,
        "d": None,
    }
    new = gbopt.apply_updates(params, updates)
    assert new["a"].dtype == jnp.bfloat16 and new["b"].dtype == jnp.float32
    np.testing.assert_allclose(new["a"].astype(jnp.float32), [1.5, 1.5])
    assert new["c"] is None
    np.testing.assert_allclose(new["d"], [1.0])


def test_second_moments_are_float32_and_first_moments_follow_low_precision_params():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = gbopt.adam(1e-3).init(params)
    assert gbopt.state_get(state, "nu")["w"].dtype == jnp.float32
    assert gbopt.state_get(state, "mu")["w"].dtype == jnp.bfloat16
    # A bfloat16 b2 = 0.999 would round to 1.0 and never decay; in float32 it does.
    tx = gbopt.accumulate_square(0.999)
    s = tx.init(params)
    _, s = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, s)
    for _ in range(100):
        _, s = tx.update({"w": jnp.zeros(3, jnp.bfloat16)}, s)
    np.testing.assert_allclose(s.nu["w"], 0.001 * 0.999**100, rtol=1e-5)
