"""Fromage against optax 0.2.8 (float64, step by step).

``gbopt.fromage`` uses the adaptive family's trust ratio (``gbopt._statistics_adaptive``,
branch catalog-a); until that module is in the tree its test skips, and the new primitive
``scale_new_params`` is tested with optax's trust ratio in the same chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import Problem, deviation, distance_travelled, run

import gbopt

PROBLEM = Problem()
TOL = 1e-10
CASES = [
    {"learning_rate": 1e-2},
    {"learning_rate": 5e-2, "min_norm": 1e-2},
    # a float64 schedule: optax multiplies Fromage's factor into the rate in the schedule's
    # dtype (optax.linear_schedule's is float32: 1.4e-7 apart from the float64 rule)
    {"learning_rate": lambda c: 5e-2 - 4.9e-4 * jnp.minimum(c, 100).astype(jnp.float64)},
]


def _id(c):
    return "-".join(f"{k}={v if not callable(v) else 'fn'}" for k, v in c.items())


def _with_optax_trust_ratio(learning_rate, min_norm=1e-6):
    """gbopt's Fromage chain around optax's trust ratio (tests scale_new_params alone)."""
    if callable(learning_rate):
        return gbopt.with_step_count(
            gbopt.chain(
                optax.scale_by_trust_ratio(min_norm),
                gbopt.scale_by_learning_rate(learning_rate),
                gbopt.scale_new_params(lambda c: 1 / jnp.sqrt(1 + learning_rate(c) ** 2)),
            )
        )
    return gbopt.chain(
        optax.scale_by_trust_ratio(min_norm),
        gbopt.scale_by_learning_rate(learning_rate),
        gbopt.scale_new_params(1 / (1 + learning_rate**2) ** 0.5),
    )


@pytest.mark.parametrize("kwargs", CASES, ids=[_id(c) for c in CASES])
def test_scale_new_params_gives_optaxs_fromage(kwargs):
    with jax.enable_x64(True):
        expected = run(optax.fromage(**kwargs), PROBLEM)
        got = run(_with_optax_trust_ratio(**kwargs), PROBLEM)
    assert deviation(got, expected) <= TOL
    assert distance_travelled(expected, PROBLEM) > 1e-2


@pytest.mark.parametrize("kwargs", CASES, ids=[_id(c) for c in CASES])
def test_fromage_matches_optax(kwargs):
    pytest.importorskip("gbopt._statistics_adaptive")  # the trust ratio (branch catalog-a)
    with jax.enable_x64(True):
        expected = run(optax.fromage(**kwargs), PROBLEM)
        got = run(gbopt.fromage(**kwargs), PROBLEM)
    assert deviation(got, expected) <= TOL


def test_scale_new_params_numpy_rule():
    w, u = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    tx = gbopt.scale_new_params(0.5)
    out, _ = tx.update(jnp.asarray(u), tx.init(jnp.asarray(w)), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(w + out), 0.5 * (w + u))
