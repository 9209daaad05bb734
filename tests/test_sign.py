"""Sign methods (signSGD, Signum, Lion) against optax 0.2.8, step by step in float64."""

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
    ("sign_sgd", {"learning_rate": 1e-2}),
    ("sign_sgd", {"learning_rate": linear64(2e-2, 1e-3, 100)}),
    ("signum", {"learning_rate": 1e-2}),
    ("signum", {"learning_rate": 1e-2, "beta": 0.5}),
    ("signum", {"learning_rate": 3e-3, "beta": 0.99, "accumulator_dtype": jnp.float64}),
    ("lion", {"learning_rate": 1e-2}),
    ("lion", {"learning_rate": 3e-3, "b1": 0.8, "b2": 0.9}),
    ("lion", {"learning_rate": 1e-2, "b1": 0.95, "b2": 0.999, "weight_decay": 0.1}),
    ("lion", {"learning_rate": 1e-2, "weight_decay": 0.0}),
    (
        "lion",
        {
            "learning_rate": 1e-2,
            "weight_decay": 0.5,
            "mask": lambda p: jax.tree.map(lambda x: x.ndim > 1, p),
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_trajectory_matches_optax(case):
    assert_matches_optax(*case, PROBLEM, tol=TOL, min_distance=0.1)


def test_options_change_the_trajectory():
    """The table discriminates: each non-default option moves optax's own trajectory."""
    with jax.enable_x64(True):
        base = {n: run(getattr(optax, n)(1e-2), PROBLEM, 30) for n in ("signum", "lion")}
        assert deviation(run(optax.signum(1e-2, beta=0.5), PROBLEM, 30), base["signum"]) > 1e-4
        assert deviation(run(optax.lion(1e-2, b1=0.8, b2=0.9), PROBLEM, 30), base["lion"]) > 1e-4
        assert deviation(run(optax.lion(1e-2, weight_decay=0.1), PROBLEM, 30), base["lion"]) > 1e-4


def test_sign_is_elementwise_sign_in_the_incoming_dtype():
    u = {"a": jnp.array([-2.0, 0.0, 3e-30], jnp.bfloat16), "b": jnp.array(-1e-3)}
    out, state = gbopt.sign().update(u, gbopt.sign().init(u))
    assert state == ()
    np.testing.assert_array_equal(np.asarray(out["a"], np.float32), [-1, 0, 1])
    assert out["a"].dtype == jnp.bfloat16 and float(out["b"]) == -1.0


def test_lion_momentum_equal_decays_is_ema():
    """With b1 = b2 the output is the moving average itself (the NumPy rule)."""
    with jax.enable_x64(True):
        tx = gbopt.lion_momentum(0.7, 0.7)
        g = np.random.default_rng(1).normal(size=(5, 3))
        state = tx.init(jnp.zeros(3))
        m = np.zeros(3)
        for row in g:
            out, state = tx.update(jnp.asarray(row), state)
            m = 0.7 * m + 0.3 * row
            np.testing.assert_allclose(np.asarray(out), m, rtol=1e-14, atol=1e-15)


def test_lion_state_dtype_follows_mu_dtype():
    tx = gbopt.lion(1e-3, mu_dtype=jnp.bfloat16)
    state = tx.init({"w": jnp.zeros(3, jnp.float32)})
    leaves = [x for x in jax.tree.leaves(state) if getattr(x, "shape", ()) == (3,)]
    assert leaves and all(x.dtype == jnp.bfloat16 for x in leaves)


def test_chains_are_visible():
    for name in ("sign_sgd", "signum", "lion"):
        info = getattr(gbopt, name)(1e-3).info
        assert info.name == name and info.kind == "optimizer"
