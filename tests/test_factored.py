"""Adafactor and SM3 against optax 0.2.8 (float64, step by step) and against NumPy.

optax computes Adafactor's decay schedule 1 - t^(-c) in float32 whatever the parameters'
dtype; gbopt computes it in the parameters' precision. The reference here is optax's
own chain (as ``optax.adafactor`` builds it) with the schedule in float64, and one test
measures what optax's float32 schedule costs a float64 run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from trajectories import Problem, deviation, distance_travelled, run, starts, updates_along

import gbopt
from gbopt._factored import factored_dims

PROBLEM = Problem()
NO_SCALAR = Problem(without_scalar=True)  # optax's scale_by_sm3 fails on scalar leaves
TOL = 1e-10


def _decay_rate_pow64(step, exponent=0.8):
    t = jnp.asarray(step + 1, jnp.float64)
    return 1.0 - t ** (-exponent)


def optax_adafactor64(
    learning_rate=None,
    min_dim_size_to_factor=128,
    decay_rate=0.8,
    decay_offset=0,
    multiply_by_parameter_scale=True,
    clipping_threshold=1.0,
    momentum=None,
    dtype_momentum=jnp.float32,
    weight_decay_rate=None,
    eps=1e-30,
    factored=True,
    weight_decay_mask=None,
):
    """optax.adafactor's chain (alias.py), its decay schedule computed in float64."""
    tx = [
        optax.scale_by_factored_rms(
            factored, decay_rate, decay_offset, min_dim_size_to_factor, eps, _decay_rate_pow64
        )
    ]
    if clipping_threshold is not None:
        tx.append(optax.clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        tx.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        tx.append(optax.scale_by_param_block_rms())
    if momentum is not None:
        tx.append(optax.ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        tx.append(optax.add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)


ADAFACTOR_CASES = [
    {"learning_rate": 1e-2},
    {"learning_rate": 1e-2, "min_dim_size_to_factor": 2},
    {"learning_rate": 1e-2, "min_dim_size_to_factor": 3, "decay_rate": 0.5, "decay_offset": -3},
    {"learning_rate": 1e-2, "min_dim_size_to_factor": 2, "clipping_threshold": None},
    {"learning_rate": 1e-2, "min_dim_size_to_factor": 2, "clipping_threshold": 1.5, "eps": 1e-3},
    {"learning_rate": 3e-2, "multiply_by_parameter_scale": False, "min_dim_size_to_factor": 2},
    {
        "learning_rate": 1e-2,
        "momentum": 0.9,
        "dtype_momentum": jnp.float64,
        "min_dim_size_to_factor": 2,
    },
    {"learning_rate": 1e-2, "weight_decay_rate": 1e-3, "min_dim_size_to_factor": 2},
    {"learning_rate": 1e-2, "factored": False},
    {"learning_rate": optax.cosine_decay_schedule(2e-2, 100), "min_dim_size_to_factor": 2},
]


def _id(kwargs):
    return "-".join(f"{k}={v if not callable(v) else 'fn'}" for k, v in kwargs.items()) or "default"


@pytest.mark.parametrize("kwargs", ADAFACTOR_CASES, ids=[_id(c) for c in ADAFACTOR_CASES])
def test_adafactor_matches_optax_chain(kwargs):
    with jax.enable_x64(True):
        expected = run(optax_adafactor64(**kwargs), PROBLEM)
        got = run(gbopt.adafactor(**kwargs), PROBLEM)
    assert deviation(got, expected) <= TOL
    assert distance_travelled(expected, PROBLEM) > 1e-2


@pytest.mark.parametrize("kwargs", [{}, {"min_dim_size_to_factor": 2}], ids=["default", "factored"])
def test_adafactor_default_updates_match_optax_chain(kwargs):
    """The defaults (no learning rate: steps of the parameters' RMS) are chaotic here.

    Along optax's trajectory a 1e-16 difference grows tenfold every five steps (to 5e-4
    after 100), so both sides are fed optax's parameters and gradients at every step and
    their updates compared (relative to the update's size).
    """
    with jax.enable_x64(True):
        path = run(optax_adafactor64(**kwargs), PROBLEM)
        expected = updates_along(optax_adafactor64(**kwargs), PROBLEM, starts(PROBLEM, path))
        got = updates_along(gbopt.adafactor(**kwargs), PROBLEM, starts(PROBLEM, path))
    size = max(float(np.max(np.abs(x))) for u in expected for x in jax.tree.leaves(u))
    assert size > 1e-2
    assert deviation(got, expected) <= TOL * size
    assert distance_travelled(path, PROBLEM) > 1e-1


def test_optax_float32_schedule_is_the_only_difference():
    """optax.adafactor itself (float32 schedule) is 6.1e-10 away after 50 steps; gbopt is not."""
    kwargs = {"learning_rate": 1e-2, "min_dim_size_to_factor": 2}
    with jax.enable_x64(True):
        plain = run(optax.adafactor(**kwargs), PROBLEM, 50)
        exact = run(optax_adafactor64(**kwargs), PROBLEM, 50)
        got = run(gbopt.adafactor(**kwargs), PROBLEM, 50)
    assert deviation(got, exact) <= TOL
    assert deviation(plain, exact) > 3 * TOL


def test_factored_state_is_row_and_column_sized():
    tx = gbopt.factored_second_moment(min_dim_size_to_factor=2)
    state = tx.init({"m": jnp.zeros((6, 5)), "t": jnp.zeros((2, 3, 4)), "v": jnp.zeros(7)})
    inner = state.inner_state if isinstance(state, gbopt.StepCountState) else state
    # (6, 5): the largest axis is 0; v_row averages over it, v_col over axis 1
    assert inner.v_row["m"].shape == (5,) and inner.v_col["m"].shape == (6,)
    # (2, 3, 4): factored over axes 1 and 2 (the two largest)
    assert inner.v_row["t"].shape == (2, 3) and inner.v_col["t"].shape == (2, 4)
    assert inner.v["v"].shape == (7,) and inner.v["m"].shape == (1,)
    assert factored_dims((6, 5), True, 2) == (1, 0)
    assert factored_dims((6, 5), True, 6) is None


def test_factored_second_moment_numpy_rule():
    """One matrix, three steps: R C / mean(R) with the decay 1 - t^-0.8 (NumPy float64)."""
    rng = np.random.default_rng(3)
    gs = rng.normal(size=(3, 4, 6))
    with jax.enable_x64(True):
        tx = gbopt.factored_second_moment(0.8, min_dim_size_to_factor=2, eps=1e-30)
        state = tx.init(jnp.zeros((4, 6)))
        r, c = np.zeros(4), np.zeros(6)
        for t, g in enumerate(gs, start=1):
            out, state = tx.update(jnp.asarray(g), state)
            beta = 1 - t**-0.8
            r = beta * r + (1 - beta) * np.mean(g**2 + 1e-30, axis=1)
            c = beta * c + (1 - beta) * np.mean(g**2 + 1e-30, axis=0)
            np.testing.assert_allclose(np.asarray(out), np.outer(r, c) / r.mean(), rtol=1e-13)


SM3_CASES = [
    {"learning_rate": 1e-1},
    {"learning_rate": 3e-1, "momentum": 0.5},
    {"learning_rate": 1e-1, "momentum": 0.0},
]


@pytest.mark.parametrize("kwargs", SM3_CASES, ids=[_id(c) for c in SM3_CASES])
def test_sm3_matches_optax(kwargs):
    with jax.enable_x64(True):
        expected = run(optax.sm3(**kwargs), NO_SCALAR)
        got = run(gbopt.sm3(**kwargs), NO_SCALAR)
    assert deviation(got, expected) <= TOL
    assert distance_travelled(expected, NO_SCALAR) > 1e-2


def test_sm3_handles_scalar_leaves_where_optax_fails():
    with jax.enable_x64(True):
        with pytest.raises(IndexError):
            run(optax.sm3(1e-1), PROBLEM, 1)
        path = run(gbopt.sm3(1e-1), PROBLEM, 20)
    assert np.all(np.isfinite(path[-1]["pair"][1]))


def test_cover_second_moment_numpy_rule():
    """SM3-II on a (2, 3, 4) tensor: nu = g² + min_i mu_i; mu_i = max over the other axes."""
    rng = np.random.default_rng(4)
    gs = rng.normal(size=(4, 2, 3, 4))
    tx = gbopt.cover_second_moment()
    with jax.enable_x64(True):
        state = tx.init(jnp.zeros((2, 3, 4)))
        mu = [np.zeros(2), np.zeros(3), np.zeros(4)]
        for g in gs:
            out, state = tx.update(jnp.asarray(g), state)
            low = np.minimum(
                np.minimum(mu[0][:, None, None], mu[1][None, :, None]), mu[2][None, None, :]
            )
            nu = g**2 + low
            mu = [nu.max(axis=(1, 2)), nu.max(axis=(0, 2)), nu.max(axis=(0, 1))]
            np.testing.assert_allclose(np.asarray(out), nu, rtol=1e-14)
    assert state.nu.shape == (2 + 3 + 4,)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: gbopt.adafactor(clipping_threshold=0.0), ValueError, "`threshold`"),
        (lambda: gbopt.adafactor(eps=-1.0), ValueError, "`eps`"),
        (lambda: gbopt.adafactor(min_dim_size_to_factor=0), ValueError, "`min_dim_size_to_factor`"),
        (lambda: gbopt.adafactor(factored=1), TypeError, "`factored`"),
        (lambda: gbopt.sm3(1.0, momentum=1.0), ValueError, "`decay`"),
    ],
)
def test_arguments_are_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_state_leaves_are_distinct_buffers():
    """A jitted step that donates the state needs every leaf in its own buffer."""
    params = {f"w{i}": jnp.zeros(8) for i in range(3)} | {"m": jnp.zeros((4, 3))}
    for tx in (
        gbopt.adafactor(1e-3),
        gbopt.adafactor(1e-3, min_dim_size_to_factor=2),
        gbopt.lbfgs(),
    ):
        leaves = [x for x in jax.tree.leaves(tx.init(params)) if getattr(x, "size", 0)]
        pointers = [
            x.unsafe_buffer_pointer() for x in leaves if hasattr(x, "unsafe_buffer_pointer")
        ]
        assert len(pointers) == len(set(pointers))
