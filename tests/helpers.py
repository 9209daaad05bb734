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


# The statistics stored in the parameters' dtype by default (docs/conventions.md, 4.6):
# (state class, field). Every other floating statistic is stored in at least float32.
FOLLOW_PARAMS = {
    ("TraceState", "trace"),
    ("EmaState", "mu"),
    ("NadamMomentumState", "mu"),
    ("LionMomentumState", "mu"),
    ("AdanMomentumState", "mu"),
    ("AdanMomentumState", "delta"),
    ("AdanMomentumState", "previous"),
    ("AdanExtrapolationState", "previous"),
    ("ScaleByAdanState", "mu"),
    ("ScaleByAdanState", "delta"),
    ("ScaleByAdanState", "previous"),
    ("OptimisticGradientState", "previous"),
    ("NesterovEmaState", "mu"),
    ("ShampooState", "momentum"),
    ("ShampooState", "graft_momentum"),
}


def storage_mismatches(state, low) -> list[str]:
    """Floating leaves of ``state`` (built for parameters of the dtype ``low``) whose dtype is
    not the default storage: ``low`` for FOLLOW_PARAMS, float32 for the others. Also fails
    (returns ["no floating statistic"]) when the state has no floating leaf at all."""
    import jax.numpy as jnp

    found, bad = [], []

    def walk(node, owner, field, path):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            for f in node._fields:
                walk(getattr(node, f), type(node).__name__, f, f"{path}.{f}")
        elif isinstance(node, (tuple, list)):
            for i, x in enumerate(node):
                walk(x, owner, field, f"{path}[{i}]")
        elif isinstance(node, dict):
            for k, x in node.items():
                walk(x, owner, field, f"{path}[{k!r}]")
        elif node is not None and jnp.issubdtype(node.dtype, jnp.floating):
            want = jnp.dtype(low) if (owner, field) in FOLLOW_PARAMS else jnp.dtype(jnp.float32)
            found.append(path)
            if node.dtype != want:
                bad.append(f"{path}: {node.dtype}, want {want}")

    walk(state, None, None, "state")
    return bad if found else ["no floating statistic"]
