"""Step-by-step float64 comparisons of two optimizers on a nested pytree (catalog tests).

The problem: a sum over leaves of ``s * (0.5 Σ d (w - t)² + 0.025 Σ w⁴)`` with a per-leaf
scale ``s`` from 1e-3 to 1e3, so that gradients span six orders of magnitude. The
gradient is computed in NumPy at each side's own parameters (both sides see the same
function; no difference of compiled gradient programs enters the comparison).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# path -> (shape, scale)
LEAVES = {
    ("dense", "w"): ((6, 5), 1.0),
    ("dense", "b"): ((5,), 1e3),
    ("conv", "k"): ((2, 3, 4), 1e-3),
    ("pair", 0): ((3,), 1e1),
    ("pair", 1): ((), 1e-1),
}


def _build(values: dict) -> dict:
    return {
        "dense": {"w": values[("dense", "w")], "b": values[("dense", "b")]},
        "conv": {"k": values[("conv", "k")]},
        "pair": (values[("pair", 0)], values[("pair", 1)]),
    }


def _flat(tree: dict) -> dict:
    return {
        ("dense", "w"): tree["dense"]["w"],
        ("dense", "b"): tree["dense"]["b"],
        ("conv", "k"): tree["conv"]["k"],
        ("pair", 0): tree["pair"][0],
        ("pair", 1): tree["pair"][1],
    }


class Problem:
    """The nested-pytree problem; ``without_scalar`` drops the scalar leaf (for optax's SM3)."""

    def __init__(self, seed: int = 0, without_scalar: bool = False):
        rng = np.random.default_rng(seed)
        self.keys = [k for k in LEAVES if not (without_scalar and LEAVES[k][0] == ())]
        self.scale = {k: LEAVES[k][1] for k in self.keys}
        self.d = {k: rng.uniform(0.5, 2.0, size=LEAVES[k][0]) for k in self.keys}
        self.t = {k: rng.normal(size=LEAVES[k][0]) for k in self.keys}
        self.x0 = {k: rng.normal(size=LEAVES[k][0]) for k in self.keys}
        self.without_scalar = without_scalar

    def tree(self, values: dict):
        if self.without_scalar:
            out = _build({**values, ("pair", 1): None})
            out["pair"] = (out["pair"][0],)
            return out
        return _build(values)

    def flat(self, tree) -> dict:
        if self.without_scalar:
            tree = {**tree, "pair": (tree["pair"][0], None)}
        return {k: np.asarray(v, np.float64) for k, v in _flat(tree).items() if k in self.keys}

    def value(self, tree) -> float:
        x = self.flat(tree)
        return float(
            sum(
                self.scale[k]
                * (0.5 * np.sum(self.d[k] * (x[k] - self.t[k]) ** 2) + 0.025 * np.sum(x[k] ** 4))
                for k in self.keys
            )
        )

    def grad(self, tree):
        x = self.flat(tree)
        g = {
            k: self.scale[k] * (self.d[k] * (x[k] - self.t[k]) + 0.1 * x[k] ** 3) for k in self.keys
        }
        return self.tree(g)

    def jnp_value(self, tree):
        """The objective as a JAX function (for line searches' ``value_fn``)."""
        if self.without_scalar:
            tree = {**tree, "pair": (tree["pair"][0], None)}
        x = _flat(tree)
        total = 0.0
        for k in self.keys:
            leaf = x[k]
            d, t = jnp.asarray(self.d[k]), jnp.asarray(self.t[k])
            total = total + self.scale[k] * (
                0.5 * jnp.sum(d * (leaf - t) ** 2) + 0.025 * jnp.sum(leaf**4)
            )
        return total

    def start(self):
        return self.tree({k: jnp.asarray(v, jnp.float64) for k, v in self.x0.items()})


def run(tx, problem: Problem, steps: int = 100, *, extra: str | None = None) -> list:
    """The parameters after each of ``steps`` updates (float64 NumPy trees).

    ``extra``: None, ``"value"`` (pass ``value=f(w)``) or ``"linesearch"`` (pass
    ``value``, ``grad`` and ``value_fn`` as optax's line searches expect).
    """
    params = problem.start()
    state = tx.init(params)
    if extra == "linesearch":
        value_fn = problem.jnp_value

        @jax.jit
        def step(params, state):
            value, grad = jax.value_and_grad(value_fn)(params)
            updates, state = tx.update(
                grad, state, params, value=value, grad=grad, value_fn=value_fn
            )
            return jax.tree.map(jnp.add, params, updates), state

        out = []
        for _ in range(steps):
            params, state = step(params, state)
            out.append(jax.tree.map(lambda x: np.asarray(x, np.float64), params))
        return out

    @jax.jit
    def step(params, state, grads, value):
        kwargs = {"value": value} if extra == "value" else {}
        updates, state = tx.update(grads, state, params, **kwargs)
        return jax.tree.map(jnp.add, params, updates), state

    out = []
    for _ in range(steps):
        grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), problem.grad(params))
        value = jnp.asarray(problem.value(params), jnp.float64)
        params, state = step(params, state, grads, value)
        out.append(jax.tree.map(lambda x: np.asarray(x, np.float64), params))
    return out


def deviation(a: list, b: list) -> float:
    """The largest |difference| over every step and element of two trajectories."""
    return max(
        max(
            float(np.max(np.abs(x - y)))
            for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
        )
        for p, q in zip(a, b, strict=True)
    )


def case_id(case: tuple) -> str:
    """A readable pytest id for a ``(name, kwargs)`` case (callables shown as ``fn``)."""
    name, kwargs = case
    return name + "-" + "-".join(f"{k}={v if not callable(v) else 'fn'}" for k, v in kwargs.items())


def assert_matches_optax(
    name: str, kwargs: dict, problem: Problem, *, tol: float = 1e-10, min_distance: float = 1e-2
) -> None:
    """``gbopt.<name>(**kwargs)`` follows ``optax.<name>(**kwargs)`` to ``tol``, in float64,
    for 100 steps on ``problem``, along a run that moves by more than ``min_distance``."""
    import optax

    import gbopt

    with jax.enable_x64(True):
        expected = run(getattr(optax, name)(**kwargs), problem)
        got = run(getattr(gbopt, name)(**kwargs), problem)
    assert deviation(got, expected) <= tol
    assert distance_travelled(expected, problem) > min_distance


def distance_travelled(path: list, problem: Problem) -> float:
    """How far the last point is from the start (the run is not trivial)."""
    start = problem.tree(problem.x0)
    return max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(path[-1]), jax.tree.leaves(start), strict=True)
    )


def updates_along(tx, problem: Problem, path: list, *, extra: str | None = None) -> list:
    """The updates ``tx`` returns at each point of ``path`` (the parameters before each step).

    For rules that are chaotic on the problem (a rounding difference grows by orders of
    magnitude along the trajectory): both sides are fed the same parameters and
    gradients, so the comparison tests the rule and its state, not the problem's chaos.
    """
    params = problem.start()
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads, value):
        kwargs = {"value": value} if extra == "value" else {}
        return tx.update(grads, state, params, **kwargs)

    out = []
    for point in path:
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), point)
        grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), problem.grad(params))
        value = jnp.asarray(problem.value(params), jnp.float64)
        updates, state = step(params, state, grads, value)
        out.append(jax.tree.map(lambda x: np.asarray(x, np.float64), updates))
    return out


def starts(problem: Problem, path: list) -> list:
    """The parameters before each step of ``path`` (the start, then all but the last)."""
    return [problem.tree(problem.x0), *path[:-1]]


def linear64(start: float, end: float, steps: int):
    """A linear schedule computed in float64 whatever the count's dtype.

    gbopt reads schedules in the parameters' precision; optax's own schedules compute in
    the count's float32, 1e-8 apart in a float64 run. This one gives both libraries the
    same values, so that a comparison tests the optimizers, not the schedules.
    """

    def schedule(count):
        c = jnp.minimum(jnp.asarray(count).astype(jnp.float64), steps)
        return start + (end - start) * c / steps

    return schedule
