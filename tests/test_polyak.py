"""Polyak's step size (SPS, SPS+) against optax 0.2.8, with ``value=`` passed to ``update``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import (
    Problem,
    deviation,
    distance_travelled,
    linear64,
    run,
    starts,
    updates_along,
)

import gbopt

PROBLEM = Problem()
TOL = 1e-10

CASES = [
    {},
    {"max_learning_rate": 1e-3},
    {"max_learning_rate": 1e-2, "scaling": 0.5},
    {"f_min": 1.0, "eps": 1e-2},
    {"f_min": 30.0, "variant": "sps+"},
    {"f_min": 30.0, "variant": "sps"},
    {"max_learning_rate": 0.1, "scaling": linear64(1.0, 0.1, 100)},
]


@pytest.mark.parametrize(
    "kwargs",
    CASES,
    ids=lambda c: (
        "-".join(f"{k}={v if not callable(v) else 'fn'}" for k, v in c.items()) or "default"
    ),
)
def test_updates_match_optax_along_its_path(kwargs):
    """Polyak's steps on this ill-conditioned problem (scales 1e-3..1e3) are chaotic: a 1e-16
    difference grows to O(1) within 65 steps. Both sides get optax's parameters, value and
    gradient at each of 100 steps; their updates must agree (relative to their size)."""
    with jax.enable_x64(True):
        path = run(optax.polyak_sgd(**kwargs), PROBLEM, extra="value")
        points = starts(PROBLEM, path)
        expected = updates_along(optax.polyak_sgd(**kwargs), PROBLEM, points, extra="value")
        got = updates_along(gbopt.polyak_sgd(**kwargs), PROBLEM, points, extra="value")
    size = max(float(np.max(np.abs(x))) for u in expected for x in jax.tree.leaves(u))
    assert deviation(got, expected) <= TOL * size
    assert distance_travelled(path, PROBLEM) > 1e-2


def test_trajectory_matches_optax_where_not_chaotic():
    kwargs = {"max_learning_rate": 1e-4}
    with jax.enable_x64(True):
        expected = run(optax.polyak_sgd(**kwargs), PROBLEM, extra="value")
        got = run(gbopt.polyak_sgd(**kwargs), PROBLEM, extra="value")
    assert deviation(got, expected) <= TOL
    assert distance_travelled(expected, PROBLEM) > 1e-2


def test_value_is_required_and_named():
    tx = gbopt.polyak_sgd()
    params = jnp.ones(3)
    with pytest.raises(ValueError, match="value=loss"):
        tx.update(params, tx.init(params), params)


def test_zero_gradient_takes_no_step():
    tx = gbopt.scale_by_polyak()
    out, _ = tx.update(jnp.zeros(3), tx.init(jnp.zeros(3)), value=jnp.array(5.0))
    assert float(jnp.max(jnp.abs(out))) == 0.0


def test_variant_is_checked():
    with pytest.raises(ValueError, match="`variant` must be 'sps' or 'sps\\+'"):
        gbopt.polyak_sgd(variant="spsplus")
