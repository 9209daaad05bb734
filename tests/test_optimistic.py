"""Optimistic gradient descent and optimistic Adam against optax 0.2.8 (float64)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import (
    Problem,
    assert_matches_optax,
    case_id,
    deviation,
    linear64,
    run,
)

import gbopt

PROBLEM = Problem()
TOL = 1e-10

CASES = [
    ("optimistic_gradient_descent", {"learning_rate": 1e-4}),
    ("optimistic_gradient_descent", {"learning_rate": 1e-4, "alpha": 0.7, "beta": 0.1}),
    ("optimistic_gradient_descent", {"learning_rate": 3e-4, "alpha": 1.0, "beta": 0.0}),
    (
        "optimistic_gradient_descent",
        {"learning_rate": linear64(3e-4, 1e-5, 100), "beta": 0.5},
    ),
    ("optimistic_adam_v2", {"learning_rate": 1e-2}),
    ("optimistic_adam_v2", {"learning_rate": 1e-2, "alpha": 0.5, "beta": 0.2}),
    ("optimistic_adam_v2", {"learning_rate": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-3}),
    ("optimistic_adam_v2", {"learning_rate": 1e-2, "eps_root": 1e-4, "nesterov": False}),
    ("optimistic_adam_v2", {"learning_rate": 1e-2, "nesterov": False, "mu_dtype": jnp.float64}),
    ("optimistic_adam_v2", {"learning_rate": optax.cosine_decay_schedule(2e-2, 100)}),
]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_trajectory_matches_optax(case):
    assert_matches_optax(*case, PROBLEM, tol=TOL, min_distance=1e-2)


@pytest.mark.parametrize(
    "kwargs",
    [{"learning_rate": 1e-2}, {"learning_rate": 1e-2, "optimism": 3e-3, "nesterov": False}],
)
def test_optimistic_adam_matches_optax_and_warns(kwargs):
    with jax.enable_x64(True):
        with pytest.warns(DeprecationWarning, match="use `optimistic_adam_v2` instead"):
            expected = run(optax.optimistic_adam(**kwargs), PROBLEM)
        with pytest.warns(DeprecationWarning, match="use `optimistic_adam_v2` instead"):
            got = run(gbopt.optimistic_adam(**kwargs), PROBLEM)
    assert deviation(got, expected) <= TOL


def test_optimistic_adam_refuses_schedules():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="optimistic_adam_v2"):
        gbopt.optimistic_adam(lambda count: 1e-3)


def test_optimistic_gradient_numpy_rule():
    """(alpha + beta) u_t - beta u_{t-1}, with u_0 := u_1."""
    us = np.random.default_rng(0).normal(size=(4, 3))
    tx = gbopt.optimistic_gradient(0.7, 0.2)
    with jax.enable_x64(True):
        state = tx.init(jnp.zeros(3))
        prev = us[0]
        for u in us:
            out, state = tx.update(jnp.asarray(u), state)
            np.testing.assert_allclose(np.asarray(out), 0.9 * u - 0.2 * prev, rtol=1e-14)
            prev = u


def test_optimistic_gradient_accepts_schedules():
    tx = gbopt.optimistic_gradient(lambda c: 1.0 + c, 0.0)
    state = tx.init(jnp.zeros(1))
    outs = []
    for _ in range(3):
        out, state = tx.update(jnp.ones(1), state)
        outs.append(float(out[0]))
    assert outs == [1.0, 2.0, 3.0]
