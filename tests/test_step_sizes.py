"""Adadelta and Rprop against optax 0.2.8 (float64, step by step) and Zeiler's rule in NumPy."""

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
    distance_travelled,
    linear64,
    run,
)

import gbopt

PROBLEM = Problem()
TOL = 1e-10


def _decay_mask(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


CASES = [
    ("adadelta", {"learning_rate": 1.0}),
    ("adadelta", {"learning_rate": 1.0, "rho": 0.5, "eps": 1e-2}),
    ("adadelta", {"learning_rate": 1.0, "rho": 0.99, "eps": 1e-3}),
    ("adadelta", {"learning_rate": 1.0, "eps": 1e-2, "weight_decay": 0.1}),
    (
        "adadelta",
        {"learning_rate": 1.0, "eps": 1e-2, "weight_decay": 0.1, "weight_decay_mask": _decay_mask},
    ),
    ("adadelta", {"learning_rate": linear64(2.0, 0.5, 100), "eps": 1e-2}),
]

RPROP_CASES = [
    {"learning_rate": 1e-2},
    {"learning_rate": 1e-3, "eta_minus": 0.3, "eta_plus": 1.5},
    {"learning_rate": 1e-2, "min_step_size": 1e-3, "max_step_size": 0.05},
]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_trajectory_matches_optax(case):
    assert_matches_optax(*case, PROBLEM, tol=TOL, min_distance=1e-2)


def _zeiler(problem, steps, rho=0.9, eps=1e-6):
    """Zeiler (2012), Alg. 1, in NumPy float64: x += Δx, Δx = -RMS[Δx]_{t-1}/RMS[g]_t g."""
    x = {k: v.copy() for k, v in problem.x0.items()}
    eg = {k: np.zeros_like(v) for k, v in x.items()}
    ex = {k: np.zeros_like(v) for k, v in x.items()}
    path = []
    for _ in range(steps):
        g = problem.flat(problem.grad(problem.tree(x)))
        for k in x:
            eg[k] = rho * eg[k] + (1 - rho) * g[k] ** 2
            dx = -np.sqrt(ex[k] + eps) / np.sqrt(eg[k] + eps) * g[k]
            ex[k] = rho * ex[k] + (1 - rho) * dx**2
            x[k] = x[k] + dx
        path.append(problem.tree({k: v.copy() for k, v in x.items()}))
    return path


@pytest.mark.parametrize("kwargs", [{}, {"rho": 0.5, "eps": 1e-2}])
def test_adadelta_without_learning_rate_is_zeilers_rule(kwargs):
    """The paper has no learning rate; gbopt's default descends by Δx as Zeiler's Alg. 1.

    optax's ``adadelta(learning_rate=None)`` leaves out the sign flip too (its
    ``scale_by_learning_rate(None)`` is the identity), so it *ascends*: the difference
    is documented in gbopt.adadelta.
    """
    with jax.enable_x64(True):
        got = run(gbopt.adadelta(**kwargs), PROBLEM)
        ascending = run(optax.adadelta(**kwargs), PROBLEM, 50)
    assert deviation(got, _zeiler(PROBLEM, 100, **kwargs)) <= TOL
    assert PROBLEM.value(got[-1]) < PROBLEM.value(PROBLEM.tree(PROBLEM.x0))
    assert PROBLEM.value(ascending[-1]) > PROBLEM.value(PROBLEM.tree(PROBLEM.x0))


def _irprop_minus(
    problem,
    steps,
    learning_rate,
    eta_minus=0.5,
    eta_plus=1.2,
    min_step_size=1e-6,
    max_step_size=50.0,
):
    """Igel & Hüsken (2003), iRprop⁻, in NumPy float64."""
    x = {k: v.copy() for k, v in problem.x0.items()}
    size = {k: np.full_like(v, learning_rate) for k, v in x.items()}
    prev = {k: np.zeros_like(v) for k, v in x.items()}
    path = []
    for _ in range(steps):
        g = problem.flat(problem.grad(problem.tree(x)))
        for k in x:
            s = g[k] * prev[k]
            grown = np.clip(
                size[k] * np.where(s > 0, eta_plus, eta_minus), min_step_size, max_step_size
            )
            size[k] = np.where(s == 0, size[k], grown)
            g[k] = np.where(s < 0, 0.0, g[k])
            x[k] = x[k] - np.sign(g[k]) * size[k]
            prev[k] = g[k]
        path.append(problem.tree({k: v.copy() for k, v in x.items()}))
    return path


@pytest.mark.parametrize(
    "kwargs", RPROP_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())
)
def test_rprop_is_irprop_minus(kwargs):
    """The paper's rule in NumPy. optax's ``rprop`` differs: it returns the *previous*
    step's update (masked by this step's sign flips), so its steps lag by one (its first
    update is 0); gbopt follows the paper and PyTorch (``tests/test_pytorch_more.py``)."""
    with jax.enable_x64(True):
        got = run(gbopt.rprop(**kwargs), PROBLEM)
        lagged = run(optax.rprop(**kwargs), PROBLEM, 2)
    assert deviation(got, _irprop_minus(PROBLEM, 100, **kwargs)) <= TOL
    assert distance_travelled(got, PROBLEM) > 1e-2
    assert deviation(lagged[:1], [PROBLEM.tree(PROBLEM.x0)]) == 0.0  # optax's first step is 0


def test_rprop_skips_the_step_after_a_sign_flip():
    """iRprop⁻ by hand: steps 0.1, 0.12, then a flip (no step, size 0.06), then 0.06."""
    tx = gbopt.rprop_step_sizes(0.1)
    with jax.enable_x64(True):
        state = tx.init(jnp.zeros(1))
        outs = []
        for g in [1.0, 2.0, -1.0, -1.0, -3.0]:
            out, state = tx.update(jnp.array([g]), state)
            outs.append(float(out[0]))
    np.testing.assert_allclose(outs, [0.1, 0.12, 0.0, -0.06, -0.072], rtol=1e-15)


def test_rprop_clip_unchanged_is_pytorchs_first_step():
    """An initial step outside the bounds: optax keeps it at s = 0, PyTorch clips it."""
    with jax.enable_x64(True):
        for clip, expected in [(False, 100.0), (True, 50.0)]:
            tx = gbopt.rprop_step_sizes(100.0, clip_unchanged=clip)
            out, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
            assert float(out[0]) == expected


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: gbopt.adadelta(rho=1.0), ValueError, "`decay`"),
        (lambda: gbopt.adadelta(eps=-1.0), ValueError, "`eps`"),
        (lambda: gbopt.rprop(0.0), ValueError, "`learning_rate`"),
        (lambda: gbopt.rprop(1e-2, eta_minus=-0.5), ValueError, "`eta_minus`"),
        (lambda: gbopt.rprop_step_sizes(1e-2, clip_unchanged=None), TypeError, "`clip_unchanged`"),
    ],
)
def test_arguments_are_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()
