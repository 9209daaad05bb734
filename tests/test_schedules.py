"""gbopt.schedules: the documented formulas, use as learning rates, optax's accepted as they are."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt
from gbopt import schedules

COUNTS = np.arange(0, 40)


def _cos(x):
    return 0.5 * (1 + math.cos(math.pi * x))


# name -> (gbopt schedule, float64 reference of its docstring formula, optax's own).
CASES = {
    "constant": (
        schedules.constant(0.3),
        lambda t: 0.3,
        optax.constant_schedule(0.3),
    ),
    "linear": (
        schedules.linear(1.0, 0.1, transition_steps=20, transition_begin=5),
        lambda t: 1.0 + (0.1 - 1.0) * min(max((t - 5) / 20, 0), 1),
        optax.linear_schedule(1.0, 0.1, 20, 5),
    ),
    "polynomial": (
        schedules.polynomial(1.0, 0.01, power=2, transition_steps=30, transition_begin=3),
        lambda t: (
            1.0 if t < 3 else 0.01 if t >= 33 else (1 - 0.01) * (1 - (t - 3) / 30) ** 2 + 0.01
        ),
        optax.polynomial_schedule(1.0, 0.01, 2, 30, 3),
    ),
    "exponential_decay": (
        schedules.exponential_decay(0.5, transition_steps=10, decay_rate=0.5, transition_begin=4),
        lambda t: 0.5 * 0.5 ** (max(t - 4, 0) / 10),
        optax.exponential_decay(0.5, 10, 0.5, 4),
    ),
    "exponential_decay_staircase_end": (
        schedules.exponential_decay(
            0.5, transition_steps=6, decay_rate=0.5, staircase=True, end_value=0.05
        ),
        lambda t: max(0.5 * 0.5 ** math.floor(t / 6), 0.05),
        optax.exponential_decay(0.5, 6, 0.5, staircase=True, end_value=0.05),
    ),
    "cosine_decay": (
        schedules.cosine_decay(2.0, decay_steps=25, alpha=0.1, exponent=1.5),
        lambda t: 2.0 * (0.1 + 0.9 * _cos(min(t, 25) / 25) ** 1.5),
        optax.cosine_decay_schedule(2.0, 25, 0.1, 1.5),
    ),
    "warmup_cosine_decay": (
        schedules.warmup_cosine_decay(
            0.0, peak_value=1.0, warmup_steps=8, decay_steps=30, end_value=0.1
        ),
        lambda t: t / 8 if t < 8 else 0.1 + 0.9 * _cos(min(t - 8, 22) / 22),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 8, 30, 0.1),
    ),
    "piecewise_constant": (
        schedules.piecewise_constant(1.0, {10: 0.1, 25: 0.5}),
        lambda t: 1.0 * (0.1 if t >= 10 else 1) * (0.5 if t >= 25 else 1),
        optax.piecewise_constant_schedule(1.0, {10: 0.1, 25: 0.5}),
    ),
    "join": (
        schedules.join([schedules.linear(0.0, 1.0, 10), schedules.cosine_decay(1.0, 20)], [10]),
        lambda t: t / 10 if t < 10 else _cos(min(t - 10, 20) / 20),
        optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, 10), optax.cosine_decay_schedule(1.0, 20)], [10]
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_follows_its_documented_formula(name):
    schedule, formula, _ = CASES[name]
    values = np.asarray([schedule(jnp.int32(t)) for t in COUNTS], np.float64)
    expected = np.asarray([formula(int(t)) for t in COUNTS])
    np.testing.assert_allclose(values, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_is_optax_bit_for_bit(name):
    schedule, _, theirs = CASES[name]
    ours = jax.jit(jax.vmap(schedule))(jnp.asarray(COUNTS, jnp.int32))
    np.testing.assert_array_equal(ours, jax.jit(jax.vmap(theirs))(jnp.asarray(COUNTS, jnp.int32)))


def _updates_for_unit_gradient(tx, steps, *, jit=False):
    """The updates of ``tx`` at each step when every gradient is 1.

    Eagerly by default, so that the schedule is computed op by op as when it is called
    alone; under jit XLA may fuse (and round) its arithmetic differently.
    """
    params = {"w": jnp.zeros(3)}
    update = jax.jit(tx.update) if jit else tx.update
    state, out = tx.init(params), []
    for _ in range(steps):
        updates, state = update({"w": jnp.ones(3)}, state, params)
        out.append(updates["w"][0])
    return np.asarray(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_is_a_learning_rate(name):
    # With g = 1: SGD's update is -lr_t exactly (own count), as is that of the injected
    # SGD; Adam's is lr_t times Adam's update at lr = 1, read through the shared step
    # count (schedule(step - 1)).
    schedule, _, _ = CASES[name]
    _check_learning_rate(schedule, len(COUNTS))


def _check_learning_rate(schedule, steps):
    lr = np.asarray([schedule(jnp.int32(t)) for t in range(steps)], np.float32)
    np.testing.assert_array_equal(_updates_for_unit_gradient(gbopt.sgd(schedule), steps), -lr)
    injected = gbopt.inject_hyperparams(gbopt.sgd)(learning_rate=schedule)
    np.testing.assert_array_equal(_updates_for_unit_gradient(injected, steps), -lr)
    adam = _updates_for_unit_gradient(gbopt.adam(schedule), steps)
    adam_at_one = _updates_for_unit_gradient(gbopt.adam(1.0), steps)
    np.testing.assert_array_equal(adam, adam_at_one * lr)


def test_schedules_run_under_jit_with_a_traced_count():
    # Under jit XLA fuses the schedule's arithmetic (and its cosine) with the update, so
    # the values are compared with the float64 formula at float32 accuracy, as above.
    schedule, formula, _ = CASES["warmup_cosine_decay"]
    expected = -np.asarray([formula(t) for t in range(30)])
    for tx in (gbopt.sgd(schedule), gbopt.adam(schedule)):
        np.testing.assert_allclose(
            _updates_for_unit_gradient(tx, 30, jit=True), expected, rtol=2e-6, atol=1e-7
        )


def test_momentum_keeps_the_scheduled_learning_rate_inside_the_velocity():
    # Book rule (Alg. 8.2): v <- mu v - lr_t g; the update is v.
    schedule = schedules.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    out = _updates_for_unit_gradient(gbopt.momentum(schedule, momentum=0.9), 10)
    v, expected = 0.0, []
    for t in range(10):
        v = 0.9 * v - float(schedule(t))
        expected.append(v)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "schedule",
    [
        optax.warmup_constant_schedule(0.0, 0.1, 5),
        optax.sgdr_schedule(
            [{"init_value": 0.1, "peak_value": 0.2, "warmup_steps": 2, "decay_steps": 6}] * 2
        ),
        optax.linear_onecycle_schedule(12, 0.3),
        lambda count: 0.1 / (1 + count),
    ],
    ids=["warmup_constant", "sgdr", "linear_onecycle", "lambda"],
)
def test_optax_schedules_and_plain_functions_are_accepted_as_they_are(schedule):
    _check_learning_rate(schedule, 12)


def test_arguments_are_checked_and_named():
    with pytest.raises(ValueError, match=r"`transition_steps` must be an int >= 1; got 0"):
        schedules.linear(1.0, 0.0, transition_steps=0)
    with pytest.raises(TypeError, match=r"`decay_steps` must be an int .*float: 10.0"):
        schedules.cosine_decay(1.0, decay_steps=10.0)
    with pytest.raises(ValueError, match=r"`decay_steps` must be an int >= 11; got 10"):
        schedules.warmup_cosine_decay(0.0, 1.0, warmup_steps=10, decay_steps=10)
    with pytest.raises(ValueError, match=r"`decay_rate` must be a finite number > 0; got 0"):
        schedules.exponential_decay(1.0, 10, decay_rate=0)
    with pytest.raises(
        ValueError, match=r"`boundaries_and_scales\[10\]` must be a finite number >= 0; got -0.1"
    ):
        schedules.piecewise_constant(1.0, {10: -0.1})
    with pytest.raises(ValueError, match=r"`init_value` must be a finite number; got nan"):
        schedules.linear(float("nan"), 0.0, 5)
    with pytest.raises(
        ValueError, match=r"one entry fewer than `schedules`.*got 2 boundaries for 2"
    ):
        schedules.join([schedules.constant(1.0), schedules.constant(2.0)], [5, 10])
    with pytest.raises(ValueError, match=r"`boundaries` must be increasing; got \[10, 5\]"):
        schedules.join([schedules.constant(1.0)] * 3, [10, 5])
    with pytest.raises(
        TypeError, match=r"`schedules\[1\]` must be a function of the count; got float"
    ):
        schedules.join([schedules.constant(1.0), 0.5], [10])
