"""Noisy SGD: the same key gives optax's noise, draw for draw (float64, step by step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import Problem, deviation, distance_travelled, linear64, run

import gbopt

PROBLEM = Problem()
TOL = 1e-10

CASES = [
    {"learning_rate": 1e-4, "key": 0},
    {"learning_rate": 1e-4, "eta": 1.0, "gamma": 0.3, "key": 7},
    {"learning_rate": 3e-4, "eta": 0.1, "gamma": 1.0, "key": "typed"},
    {"learning_rate": linear64(3e-4, 1e-5, 100), "eta": 0.5, "key": 1},
]


def _kwargs(case):
    return {**case, "key": jax.random.key(3) if case["key"] == "typed" else case["key"]}


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: "-".join(f"{k}={v if not callable(v) else 'fn'}" for k, v in c.items()),
)
def test_trajectory_matches_optax_with_the_same_key(case):
    with jax.enable_x64(True):
        expected = run(optax.noisy_sgd(**_kwargs(case)), PROBLEM)
        got = run(gbopt.noisy_sgd(**_kwargs(case)), PROBLEM)
        noiseless = run(optax.sgd(case["learning_rate"]), PROBLEM)
    assert deviation(got, expected) <= TOL
    assert deviation(got, noiseless) > 1e-6  # the noise is there
    assert distance_travelled(expected, PROBLEM) > 1e-2


def test_noise_statistics_and_determinism():
    """Mean 0, variance eta / t^gamma at step t; same state, same noise; next key differs."""
    tx = gbopt.add_noise(eta=4.0, gamma=0.5, key=11)
    zeros = {"a": jnp.zeros((200, 100)), "b": jnp.zeros(5000)}
    state = tx.init(zeros)
    first, state1 = tx.update(zeros, state)
    again, _ = tx.update(zeros, state)
    second, _ = tx.update(zeros, state1)
    np.testing.assert_array_equal(first["a"], again["a"])
    for t, out in [(1, first), (2, second)]:
        for x in jax.tree.leaves(out):
            x = np.asarray(x)
            assert abs(x.mean()) < 5 * np.sqrt(4.0 / t**0.5 / x.size)
            assert abs(x.var() / (4.0 / t**0.5) - 1) < 0.1
    assert not np.allclose(first["a"], second["a"])
    assert not np.allclose(np.asarray(first["a"]).ravel()[:5000], first["b"])  # one key per leaf


def test_key_is_required_or_warned():
    with pytest.warns(UserWarning, match="No `key` given"):
        gbopt.noisy_sgd(1e-3)
    with pytest.warns(DeprecationWarning, match="`seed` is deprecated"):
        gbopt.noisy_sgd(1e-3, seed=1)
    with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
        gbopt.noisy_sgd(1e-3, key="0")
    with pytest.raises(ValueError, match="`eta`"):
        gbopt.noisy_sgd(1e-3, eta=-1.0, key=0)
