"""Shared test helpers: pytrees, problems from the literature, the optimizer table."""

from __future__ import annotations

import numpy as np

import gbopt


def nested_tree(rng: np.random.Generator, dtype=np.float64) -> dict:
    """A nested pytree with dicts, a tuple, a matrix and a scalar leaf."""
    return {
        "dense": {
            "w": rng.normal(size=(3, 4)).astype(dtype),
            "b": rng.normal(size=(4,)).astype(dtype),
        },
        "pair": (rng.normal(size=(2,)).astype(dtype), np.asarray(rng.normal(), dtype=dtype)),
    }


def rosenbrock(x, y, a=1.0, b=100.0):
    """Rosenbrock's banana function; minimum 0 at (a, a**2)."""
    return (a - x) ** 2 + b * (y - x**2) ** 2


# Every optimizer of the seed with small, stable hyperparameters for table-driven tests.
OPTIMIZERS = {
    "sgd": lambda: gbopt.sgd(1e-2),
    "gd": lambda: gbopt.gd(1e-2),
    "momentum": lambda: gbopt.momentum(1e-2, momentum=0.9),
    "nesterov": lambda: gbopt.nesterov(1e-2, momentum=0.9),
    "adagrad": lambda: gbopt.adagrad(1e-1),
    "rmsprop": lambda: gbopt.rmsprop(1e-2),
    "rmsprop_nesterov": lambda: gbopt.rmsprop_nesterov(1e-3),
    "adam": lambda: gbopt.adam(1e-2),
}


def conventions_problem(offset: float = 0.0):
    """CONVENTIONS.md's problem: 0.5 xᵀAx − cᵀx + 0.025 Σx⁴ over {"W": (3, 4), "b": (5,)}.

    Returns ``(A, c, x0)`` in float64 from a fixed seed; ``offset`` shifts the start.
    """
    rng = np.random.default_rng(0)
    m = rng.normal(size=(17, 17))
    a = m @ m.T / 17 + 0.5 * np.eye(17)
    c = rng.normal(size=17)
    x0 = {"W": rng.normal(size=(3, 4)) + offset, "b": rng.normal(size=(5,)) + offset}
    return a, c, x0
