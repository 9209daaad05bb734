"""gbopt.soap and gbopt.shampoo against trajectories of the authors' reference code.

The trajectories were produced outside the repository by tests/fixtures/matrix/generate.py
(see tests/fixtures/matrix/README.md: repositories, commits, settings); each fixture holds
the problem (f(W) = 0.5 ||A W - C||^2 per matrix), the initial matrices and the matrices
after each of 50 steps, in float64.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt

pytestmark = pytest.mark.slow  # 50 jitted float64 steps per case

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "matrix")
STEPS = 50


def load(name):
    with np.load(os.path.join(HERE, f"{name}.npz")) as f:
        data = dict(f)
    n = sum(1 for k in data if k.startswith("traj"))
    return data, n


def run(tx, data, n):
    """Runs ``tx`` on the fixture's problem; returns the largest relative deviation."""
    params = [jnp.asarray(data[f"W{i}"]) for i in range(n)]
    state = tx.init(params)
    step = jax.jit(tx.update)
    worst = 0.0
    for t in range(STEPS):
        grads = [
            jnp.asarray(data[f"A{i}"].T @ (data[f"A{i}"] @ np.asarray(p) - data[f"C{i}"]))
            for i, p in enumerate(params)
        ]
        updates, state = step(grads, state, params)
        params = gbopt.apply_updates(params, updates)
        for i, p in enumerate(params):
            ref = data[f"traj{i}"][t + 1]
            worst = max(worst, float(np.max(np.abs(np.asarray(p) - ref)) / np.max(np.abs(ref))))
    return worst


def test_soap_matches_the_authors_reference():
    data, n = load("soap")
    with jax.enable_x64(True):
        tx = gbopt.soap(
            3e-3,
            b1=0.95,
            b2=0.95,
            shampoo_beta=-1,
            eps=1e-8,
            weight_decay=0.01,
            precondition_frequency=5,
            max_precond_dim=6,
        )
        assert run(tx, data, n) <= 1e-6


SHAMPOO = dict(
    block_size=4,
    beta1=0.9,
    beta2=0.99,
    diagonal_epsilon=1e-10,
    matrix_epsilon=1e-6,
    weight_decay=1e-3,
    start_preconditioning_step=5,
    preconditioning_compute_steps=3,
    nesterov=True,
)


@pytest.mark.parametrize(
    "name, extra",
    [
        ("shampoo", dict(graft_type="rmsprop", relative_matrix_epsilon=True)),
        ("shampoo_blocks", dict(graft_type="adagrad", relative_matrix_epsilon=False)),
    ],
)
def test_shampoo_matches_distributed_shampoo(name, extra):
    data, n = load(name)
    with jax.enable_x64(True):
        tx = gbopt.shampoo(0.05, **SHAMPOO, **extra)
        assert run(tx, data, n) <= 1e-6


def test_the_fixtures_move():
    # A check that could fail: the trajectories are not constant (so the comparisons
    # above compare something), and gbopt with other settings departs from them.
    data, n = load("shampoo")
    assert np.max(np.abs(data["traj0"][-1] - data["traj0"][0])) > 1e-2
    with jax.enable_x64(True):
        tx = gbopt.shampoo(0.05, **dict(SHAMPOO, beta2=0.9))
        assert run(tx, data, n) > 1e-4
