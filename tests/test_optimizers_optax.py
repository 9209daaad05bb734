"""The seed's optimizers with their optax options against optax itself, step by step.

The textbook (MATH.md) is each optimizer's default; where optax's defaults differ, the
keyword options documented in each docstring reproduce optax's trajectory. Float64,
200 steps of the same problem, every step within 1e-12.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import conventions_problem

import gbopt

STEPS = 200
TOL = 1e-12

# Started 2 away from the minimum, so that the sign-like RMSProp steps stay in the
# transient regime for 200 steps (CONVENTIONS.md §4.8: near the minimum they turn chaotic).
A, C, X0 = conventions_problem(offset=2.0)


def loss(params):
    x = jnp.concatenate([params["W"].ravel(), params["b"].ravel()])
    return 0.5 * x @ jnp.asarray(A) @ x - jnp.asarray(C) @ x + 0.025 * jnp.sum(x**4)


def trajectory(tx):
    """The parameters after each of ``STEPS`` steps of ``tx`` (one compiled scan)."""
    params = {k: jnp.asarray(v, jnp.float64) for k, v in X0.items()}

    def body(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = gbopt.apply_updates(params, updates)
        return (params, state), params

    _, path = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=STEPS))(params)
    return {k: np.asarray(v) for k, v in path.items()}


def deviation(a, b) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def schedule(count):
    """Warm-up then decay, so that the place of the learning rate matters."""
    return 1e-2 * (count + 1) / (5 + 0.05 * (count + 1) ** 2)


def schedule_small(count):
    return schedule(count) / 50


# (id, gbopt transform, optax transform): the same rule.
SAME = [
    ("sgd", lambda: gbopt.sgd(1e-2), lambda: optax.sgd(1e-2)),
    ("sgd-schedule", lambda: gbopt.sgd(schedule), lambda: optax.sgd(schedule)),
    (
        "momentum-lr-outside-schedule",
        lambda: gbopt.momentum(schedule, 0.9, learning_rate_in_velocity=False),
        lambda: optax.sgd(schedule, momentum=0.9),
    ),
    (
        "momentum-constant-lr",  # with a constant rate the placement does not matter
        lambda: gbopt.momentum(1e-2, 0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
    ),
    (
        "nesterov-lr-outside-schedule",
        lambda: gbopt.nesterov(schedule, 0.9, learning_rate_in_velocity=False),
        lambda: optax.sgd(schedule, momentum=0.9, nesterov=True),
    ),
    (
        "adagrad-optax-defaults",
        lambda: gbopt.adagrad(1e-1, eps=1e-7, initial_accumulator_value=0.1, eps_in_sqrt=True),
        lambda: optax.adagrad(1e-1),
    ),
    (
        "adagrad-eps-in-sqrt-zero-start",
        lambda: gbopt.adagrad(1e-1, eps=1e-3, eps_in_sqrt=True),
        lambda: optax.adagrad(1e-1, initial_accumulator_value=0.0, eps=1e-3),
    ),
    ("rmsprop-optax-defaults", lambda: gbopt.rmsprop(1e-3, eps=1e-8), lambda: optax.rmsprop(1e-3)),
    (
        "rmsprop-eps-outside-initial-scale",
        lambda: gbopt.rmsprop(1e-3, 0.95, 1e-4, eps_in_sqrt=False, initial_scale=1.0),
        lambda: optax.rmsprop(1e-3, 0.95, 1e-4, eps_in_sqrt=False, initial_scale=1.0),
    ),
    (
        "rmsprop-centered",
        lambda: gbopt.rmsprop(1e-3, 0.9, 1e-8, centered=True),
        lambda: optax.rmsprop(1e-3, 0.9, 1e-8, centered=True),
    ),
    (
        "rmsprop-momentum-schedule",
        lambda: gbopt.rmsprop(schedule_small, 0.9, 1e-8, momentum=0.9),
        lambda: optax.rmsprop(schedule_small, 0.9, 1e-8, momentum=0.9),
    ),
    (
        "rmsprop-centered-nesterov-eps-outside",
        lambda: gbopt.rmsprop(
            2e-4, 0.9, 1e-6, eps_in_sqrt=False, centered=True, momentum=0.9, nesterov=True
        ),
        lambda: optax.rmsprop(
            2e-4, 0.9, 1e-6, eps_in_sqrt=False, centered=True, momentum=0.9, nesterov=True
        ),
    ),
    (
        "rmsprop_nesterov",
        lambda: gbopt.rmsprop_nesterov(2e-4, 0.9, 0.9, 1e-8),
        lambda: optax.rmsprop(2e-4, 0.9, 1e-8, momentum=0.9, nesterov=True),
    ),
    ("adam", lambda: gbopt.adam(1e-2), lambda: optax.adam(1e-2)),
    ("adam-schedule", lambda: gbopt.adam(schedule), lambda: optax.adam(schedule)),
    # optax's keyword arguments on the names gbopt has (issue 14), same rule as optax.
    (
        "sgd-momentum-constant-lr",
        lambda: gbopt.sgd(1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
    ),
    (
        "sgd-nesterov-constant-lr",
        lambda: gbopt.sgd(1e-2, 0.8, True),
        lambda: optax.sgd(1e-2, 0.8, True),
    ),
    (
        "sgd-momentum-lr-outside-schedule",
        lambda: gbopt.sgd(schedule, momentum=0.9, learning_rate_in_velocity=False),
        lambda: optax.sgd(schedule, momentum=0.9),
    ),
    (
        "sgd-nesterov-lr-outside-schedule",
        lambda: gbopt.sgd(schedule, 0.7, True, learning_rate_in_velocity=False),
        lambda: optax.sgd(schedule, 0.7, True),
    ),
    (
        "adam-eps-root",
        lambda: gbopt.adam(1e-2, 0.8, 0.99, 1e-6, eps_root=1e-4),
        lambda: optax.adam(1e-2, 0.8, 0.99, 1e-6, eps_root=1e-4),
    ),
    (
        "adam-nesterov",
        lambda: gbopt.adam(1e-2, nesterov=True),
        lambda: optax.adam(1e-2, nesterov=True),
    ),
    (
        "adam-nesterov-schedule-eps-root",
        lambda: gbopt.adam(schedule, 0.95, 0.9, 1e-7, 1e-8, nesterov=True),
        lambda: optax.adam(schedule, 0.95, 0.9, 1e-7, 1e-8, nesterov=True),
    ),
    (
        "adam-float64-storage",
        lambda: gbopt.adam(1e-2, mu_dtype=jnp.float64, nu_dtype=jnp.float64),
        lambda: optax.adam(1e-2, mu_dtype=jnp.float64),
    ),
    (
        "rmsprop-bias-correction",
        lambda: gbopt.rmsprop(1e-3, 0.9, 1e-8, bias_correction=True),
        lambda: optax.rmsprop(1e-3, 0.9, 1e-8, bias_correction=True),
    ),
    (
        "rmsprop-bias-correction-momentum-schedule-eps-outside",
        lambda: gbopt.rmsprop(
            schedule, 0.95, 1e-6, eps_in_sqrt=False, momentum=0.5, bias_correction=True
        ),
        lambda: optax.rmsprop(
            schedule, 0.95, 1e-6, eps_in_sqrt=False, momentum=0.5, bias_correction=True
        ),
    ),
    (
        "adagrad-optax-keywords",
        lambda: gbopt.adagrad(1e-1, initial_accumulator_value=0.5, eps=1e-3, eps_in_sqrt=True),
        lambda: optax.adagrad(1e-1, initial_accumulator_value=0.5, eps=1e-3),
    ),
]


@pytest.mark.parametrize("make_gbopt, make_optax", [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_options_reproduce_optax(make_gbopt, make_optax):
    with jax.enable_x64(True):
        got, want = trajectory(make_gbopt()), trajectory(make_optax())
    assert deviation(got, want) <= TOL
    assert deviation(want, {k: np.broadcast_to(v, want[k].shape) for k, v in X0.items()}) > 0.1


# (id, gbopt default, optax default, at least this far apart): the conventions differ.
DIFFERENT = [
    ("adagrad", lambda: gbopt.adagrad(1e-1), lambda: optax.adagrad(1e-1), 1e-2),
    ("rmsprop-eps", lambda: gbopt.rmsprop(1e-3), lambda: optax.rmsprop(1e-3), 1e-7),
    (
        "momentum-lr-inside-schedule",
        lambda: gbopt.momentum(schedule, 0.9),
        lambda: optax.sgd(schedule, momentum=0.9),
        1e-2,
    ),
    (
        "nesterov-lr-inside-schedule",
        lambda: gbopt.nesterov(schedule, 0.9),
        lambda: optax.sgd(schedule, momentum=0.9, nesterov=True),
        1e-2,
    ),
]


@pytest.mark.parametrize(
    "make_gbopt, make_optax, apart", [c[1:] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT]
)
def test_textbook_defaults_differ_from_optax(make_gbopt, make_optax, apart):
    with jax.enable_x64(True):
        assert deviation(trajectory(make_gbopt()), trajectory(make_optax())) > apart


def test_momentum_textbook_rule_under_a_schedule():
    """The default keeps lr inside the velocity: v <- mu v - lr_t g (Alg. 8.2) in NumPy."""
    with jax.enable_x64(True):
        got = trajectory(gbopt.momentum(schedule, 0.9))
        grad = jax.jit(jax.grad(loss))
        w = {k: np.asarray(v, np.float64) for k, v in X0.items()}
        v = {k: np.zeros_like(x) for k, x in w.items()}
        for t in range(STEPS):
            g = grad(w)
            v = {k: 0.9 * v[k] - schedule(t) * np.asarray(g[k]) for k in w}
            w = {k: w[k] + v[k] for k in w}
    assert deviation({k: got[k][-1] for k in w}, w) <= TOL


def test_storage_dtypes_and_option_errors():
    params = {"w": jnp.zeros(3, jnp.float32), "c": jnp.zeros(2, jnp.complex64)}
    state = gbopt.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.bfloat16).init(params)
    assert gbopt.state_get(state, "trace")["w"].dtype == jnp.bfloat16
    state = gbopt.adam(0.1, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).init(params)
    assert gbopt.state_get(state, "mu")["w"].dtype == jnp.bfloat16
    assert gbopt.state_get(state, "nu")["w"].dtype == jnp.bfloat16
    # Complex parameters: mu keeps its real and imaginary parts as pairs of the asked
    # (real) dtype on a last axis of 2; nu is real.
    mu_c = gbopt.state_get(state, "mu")["c"]
    assert (mu_c.dtype, mu_c.shape) == (jnp.bfloat16, (2, 2))
    assert gbopt.state_get(state, "nu")["c"].dtype == jnp.bfloat16
    with pytest.raises(TypeError, match=r"`mu_dtype` must be a floating-point dtype"):
        gbopt.adam(0.1, mu_dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"`accumulator_dtype` must be a floating-point dtype"):
        gbopt.sgd(0.1, momentum=0.9, accumulator_dtype="int8")
    with pytest.raises(ValueError, match=r"`nesterov=True` needs a `momentum`"):
        gbopt.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\)"):
        gbopt.sgd(0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"`eps_root` must be a finite number >= 0"):
        gbopt.adam(0.1, eps_root=-1e-8)
    with pytest.raises(ValueError, match=r"`bias_correction=True` is not available with"):
        gbopt.rmsprop(0.1, centered=True, bias_correction=True)


def test_rmsprop_nesterov_without_momentum_is_an_error():
    with pytest.raises(ValueError, match="`nesterov=True` needs a `momentum`"):
        gbopt.rmsprop(1e-3, nesterov=True)
