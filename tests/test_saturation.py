"""Step counters are integers that saturate, and the updates at the limit are right (point 7).

A plain int32 ``count + 1`` wraps to -2**31 after 2**31 - 1 steps (flipping the sign of
every bias correction); PyTorch's float32 ``step`` stops counting at 2**24. gbopt's count
is exact up to 2**31 - 1 and then stays there. States are started near the limit by
replacing their count field, and the updates are compared with the MATH.md rule in NumPy
float64 at the same step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt
from gbopt import _numerics

LIMIT = int(np.iinfo(np.int32).max)
B1, B2, EPS, LR = 0.9, 1 - 1e-9, 1e-8, 1e-3  # b2^t is far from 0 even at t = 2**31 - 1


def _find(state, cls):
    """The one ``cls`` node inside ``state``."""
    found = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls))
        if isinstance(x, cls)
    ]
    assert len(found) == 1
    return found[0]


def _moments(s, r, g):
    """Adam's moment updates (MATH.md rule 7) in NumPy float64."""
    return B1 * s + (1 - B1) * g, B2 * r + (1 - B2) * g * g


def _adam_update(s, r, t):
    """Adam's update from the new moments ``s, r`` at step ``t`` in NumPy float64."""
    s_hat = s / (1 - B1**t)
    r_hat = r / (1 - B2**t)
    return -LR * s_hat / (np.sqrt(r_hat) + EPS)


def test_safe_increment_saturates_where_plain_addition_wraps():
    assert int(jnp.asarray(LIMIT, jnp.int32) + jnp.int32(1)) == -(2**31)  # what is avoided
    inc = jax.jit(_numerics.safe_increment)
    assert int(inc(jnp.int32(LIMIT - 1))) == LIMIT
    assert int(inc(jnp.int32(LIMIT))) == LIMIT
    assert int(inc(jnp.int32(2**24))) == 2**24 + 1  # where a float32 count stops
    assert inc(jnp.int32(0)).dtype == jnp.int32


@pytest.mark.parametrize(
    "dtype, rtol",
    # float64: only the rounding of the last operations. float32: t rounds to 2**31 and
    # log(b2) to 6e-8 relative, so 1 - b2^t is off by ~2e-8; the division and root by a
    # few ulps.
    [("float64", 1e-12), ("float32", 1e-6)],
)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_adam_at_the_step_limit_matches_the_rule(dtype, rtol, jit):
    with jax.enable_x64(dtype == "float64"):
        rng = np.random.default_rng(0)
        params = {"w": jnp.asarray(rng.normal(size=(5,)), dtype)}
        tx = gbopt.adam(LR, b1=B1, b2=B2, eps=EPS)
        update = jax.jit(tx.update) if jit else tx.update
        state = tx.init(params)
        _, state = update({"w": jnp.asarray(rng.normal(size=(5,)), dtype)}, state, params)
        state = state._replace(count=jnp.asarray(LIMIT - 1, jnp.int32))
        for _ in range(3):  # reaching the limit, then staying there
            s = np.asarray(_find(state, gbopt.EmaState).mu["w"], np.float64)
            r = np.asarray(_find(state, gbopt.AccumulateSquareState).nu["w"], np.float64)
            g = np.asarray(rng.normal(size=(5,)), dtype)
            updates, state = update({"w": jnp.asarray(g)}, state, params)
            assert state.count.dtype == jnp.int32
            assert int(state.count) == LIMIT
            new_s = np.asarray(_find(state, gbopt.EmaState).mu["w"], np.float64)
            new_r = np.asarray(_find(state, gbopt.AccumulateSquareState).nu["w"], np.float64)
            if dtype == "float64":  # (in float32 the EMA's cancellation dominates)
                expected_s, expected_r = _moments(s, r, g.astype(np.float64))
                np.testing.assert_allclose(new_s, expected_s, rtol=rtol)
                np.testing.assert_allclose(new_r, expected_r, rtol=rtol)
            # The update at step t = LIMIT, from the moments gbopt holds.
            np.testing.assert_allclose(
                np.asarray(updates["w"], np.float64), _adam_update(new_s, new_r, LIMIT), rtol=rtol
            )
    # The bias correction is far from trivial at this step.
    assert 0.1 < B2**LIMIT < 0.2


def test_count_past_float32_precision_is_exact():
    # PyTorch's float32 step stays at 2**24; gbopt's moves to 2**24 + 1, and the
    # correction uses that step (the difference is 2e-8 relative, seen in float64).
    b2 = 1 - 1e-7
    with jax.enable_x64(True):
        tx = gbopt.bias_correction(b2)
        state = gbopt.StepCountState(jnp.asarray(2**24, jnp.int32), ())
        u = {"w": jnp.asarray([1.0, -2.0], jnp.float64)}
        out, state = tx.update(u, state)
        assert int(state.count) == 2**24 + 1
        t = 2**24 + 1
        np.testing.assert_allclose(out["w"], np.asarray([1.0, -2.0]) / (1 - b2**t), rtol=1e-13)
        stalled = np.asarray([1.0, -2.0]) / (1 - b2 ** (2**24))
        assert not np.allclose(out["w"], stalled, rtol=1e-13, atol=0)


def test_bias_correction_own_count_saturates():
    decay = 1 - 1e-9
    with jax.enable_x64(True):
        tx = gbopt.bias_correction(decay)
        state = gbopt.StepCountState(jnp.asarray(LIMIT - 1, jnp.int32), ())
        u = {"w": jnp.asarray([3.0], jnp.float64)}
        for _ in range(3):
            out, state = jax.jit(tx.update)(u, state)
            assert int(state.count) == LIMIT
            np.testing.assert_allclose(out["w"], [3.0 / (1 - decay**LIMIT)], rtol=1e-13)


def test_schedule_count_saturates_and_the_schedule_is_read_there():
    def schedule(count):
        return 1e-3 * count.astype(jnp.float32) / LIMIT  # > 0 only if the count is right

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.ones(3)}
    for tx, set_count in [
        (gbopt.sgd(schedule), lambda s: (gbopt.StepCountState(jnp.int32(LIMIT - 1), ()),)),
        (
            gbopt.with_step_count(lambda t: gbopt.scale_by_learning_rate(schedule, step=t)),
            lambda s: s._replace(count=jnp.int32(LIMIT - 1)),
        ),
    ]:
        state = set_count(tx.init(params))
        for _ in range(3):
            updates, state = jax.jit(tx.update)(grads, state, params)
            count = jax.tree.leaves(state)[0]
            assert int(count) == LIMIT
            # sgd reads the schedule at the updates applied so far (LIMIT - 1, then LIMIT);
            # a shared count at step - 1 = LIMIT - 1. Either way a descent step of ~1e-3.
            assert np.all(np.asarray(updates["w"]) < 0)
            np.testing.assert_allclose(updates["w"], -1e-3, rtol=1e-6)
