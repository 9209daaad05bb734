"""L-BFGS against optax 0.2.8 (float64, with and without line searches) and NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import Problem, deviation, run

import gbopt

PROBLEM = Problem()
TOL = 1e-10


def _zoom():
    return optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


CASES = [
    ("default", lambda m: m.lbfgs()),
    ("memory3", lambda m: m.lbfgs(memory_size=3)),
    ("unscaled", lambda m: m.lbfgs(scale_init_precond=False)),
    ("backtracking", lambda m: m.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(20))),
    ("fixed-step", lambda m: m.lbfgs(learning_rate=1e-4, linesearch=None)),
    (
        "fixed-step-m2",
        lambda m: m.lbfgs(
            learning_rate=1e-4, memory_size=2, linesearch=None, scale_init_precond=False
        ),
    ),
]


@pytest.mark.slow  # 100 steps, each with up to 20 line-search evaluations, twice
@pytest.mark.parametrize("name, build", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_optax(name, build):
    with jax.enable_x64(True):
        expected = run(build(optax), PROBLEM, 100, extra="linesearch")
        got = run(build(gbopt), PROBLEM, 100, extra="linesearch")
    assert deviation(got, expected) <= TOL


def _two_loop(g, s_list, y_list, gamma):
    """Nocedal & Wright, Alg. 7.4 in NumPy (pairs oldest first)."""
    q = g.copy()
    alphas = []
    for s, y in reversed(list(zip(s_list, y_list, strict=True))):
        a = (s @ q) / (s @ y)
        alphas.append(a)
        q = q - a * y
    r = gamma * q
    for (s, y), a in zip(zip(s_list, y_list, strict=True), reversed(alphas), strict=True):
        b = (y @ r) / (s @ y)
        r = r + (a - b) * s
    return r


def test_memory_is_the_two_loop_recursion():
    """Each output is Alg. 7.4 in NumPy with the pairs seen so far and gamma of the newest."""
    rng = np.random.default_rng(0)
    n = 4
    m = rng.normal(size=(n, n))
    a = m @ m.T + n * np.eye(n)
    tx = gbopt.lbfgs_memory(memory_size=3, scale_init_precond=True)
    with jax.enable_x64(True):
        x = rng.normal(size=n)
        state = tx.init(jnp.asarray(x))
        s_list, y_list, prev = [], [], None
        for _ in range(6):
            g = a @ x + 0.1 * x**3
            out, state = tx.update(jnp.asarray(g), state, jnp.asarray(x))
            if prev is not None:
                s_list.append(x - prev[0])
                y_list.append(g - prev[1])
            gamma = (
                min(1.0, 1 / np.linalg.norm(g))
                if not s_list
                else (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
            )
            expected = _two_loop(g, s_list[-3:], y_list[-3:], gamma)
            np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-12)
            prev = (x, g)
            x = x - 0.1 * np.asarray(out) - 0.01 * rng.normal(size=n)


def test_memory_satisfies_the_secant_equation():
    """BFGS's defining property: the inverse-Hessian estimate maps the newest y to s."""
    rng = np.random.default_rng(1)
    n = 5
    tx = gbopt.lbfgs_memory(memory_size=n + 2, scale_init_precond=False)
    with jax.enable_x64(True):
        xs = rng.normal(size=(4, n))
        gs = [x + 0.3 * x**3 for x in xs]
        state = tx.init(jnp.asarray(xs[0]))
        for x, g in zip(xs, gs, strict=True):
            _, state = tx.update(jnp.asarray(g), state, jnp.asarray(x))
        y, s = gs[-1] - gs[-2], xs[-1] - xs[-2]
        # A probe at the same parameters adds an empty pair (s = 0, rho = 0): H y alone.
        probe, _ = tx.update(jnp.asarray(y), state, jnp.asarray(xs[-1]))
    np.testing.assert_allclose(np.asarray(probe), s, rtol=1e-10)


def test_needs_params_and_a_positive_memory():
    tx = gbopt.lbfgs_memory()
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
    with pytest.raises(ValueError, match="`memory_size`"):
        gbopt.lbfgs(memory_size=0)


def test_value_and_grad_from_state_recycles_the_line_search():
    """optax's recipe works unchanged with gbopt.lbfgs (the zoom state is optax's)."""

    def f(x):
        return jnp.sum((x - 1.0) ** 2 * jnp.arange(1.0, 4.0))

    tx = gbopt.lbfgs()
    params = jnp.zeros(3)
    state = tx.init(params)
    value_and_grad = optax.value_and_grad_from_state(f)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(params, updates), state

    for _ in range(15):
        params, state = step(params, state)
    np.testing.assert_allclose(params, jnp.ones(3), atol=1e-5)
