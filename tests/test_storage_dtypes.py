"""Per-statistic storage dtypes of the optimizers: narrow storage, float32 (or wider) arithmetic.

Each optimizer runs with float32 parameters and gradients and a bfloat16 statistic, against
a NumPy model that computes every step in float64 and rounds the stored statistic to
bfloat16 after each step (the update itself is computed before that rounding). Then the
default storage of every statistic for bfloat16 parameters (first moments follow the
parameters, the others stay float32, and why: optax's bfloat16 ``nu`` freezes), and a
bfloat16 first moment of complex parameters stored as (real, imaginary) pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gbopt
from gbopt import _averaging

BF16 = ml_dtypes.bfloat16
LR, MU, RHO, EPS = 0.1, 0.9, 0.9, 1e-6


def _bf16(x):
    return np.asarray(x, np.float64).astype(BF16).astype(np.float64)


def _model(name, grads):
    """Float64 steps with the statistic stored in bfloat16; returns the updates."""
    v = np.zeros_like(grads[0])
    r = np.zeros_like(grads[0])
    out = []
    for g in grads:
        if name in ("momentum", "nesterov"):
            v_new = MU * v - LR * g
            out.append(v_new if name == "momentum" else -LR * g + MU * v_new)
            v = _bf16(v_new)
        elif name == "adagrad":
            r_new = r + g * g
            out.append(-LR * g / (np.sqrt(r_new) + EPS))
            r = _bf16(r_new)
        elif name == "rmsprop":
            r_new = r + (1 - RHO) * (g * g - r)
            out.append(-LR * g / np.sqrt(r_new + EPS))
            r = _bf16(r_new)
        elif name == "rmsprop_nesterov":
            r_new = r + (1 - RHO) * (g * g - r)
            u = -LR * g / np.sqrt(r_new + EPS)
            v_new = MU * v + u  # the velocity stays float32 here
            out.append(u + MU * v_new)
            r = _bf16(r_new)
            v = v_new
    return out


CASES = {
    "momentum": lambda: gbopt.momentum(LR, MU, accumulator_dtype=jnp.bfloat16),
    "nesterov": lambda: gbopt.nesterov(LR, MU, accumulator_dtype=jnp.bfloat16),
    "adagrad": lambda: gbopt.adagrad(LR, EPS, nu_dtype=jnp.bfloat16),
    "rmsprop": lambda: gbopt.rmsprop(LR, RHO, EPS, nu_dtype=jnp.bfloat16),
    "rmsprop_nesterov": lambda: gbopt.rmsprop_nesterov(LR, RHO, MU, EPS, nu_dtype=jnp.bfloat16),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_storage_float32_arithmetic_matches_the_rounding_model(name):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(24,)) for _ in range(12)]
    tx = CASES[name]()
    params = {"w": jnp.zeros((24,), jnp.float32)}
    state = tx.init(params)
    stored = [x.dtype for x in jax.tree.leaves(state) if x.shape == (24,)]
    # rmsprop_nesterov's velocity keeps the default (float32); only nu is narrowed
    narrow = [jnp.bfloat16] if name != "rmsprop_nesterov" else [jnp.bfloat16, jnp.float32]
    assert sorted(map(str, stored)) == sorted(map(str, map(jnp.dtype, narrow)))
    step = jax.jit(tx.update)
    expected = _model(name, grads)
    for g, want in zip(grads, expected, strict=True):
        u, state = step({"w": jnp.asarray(g, jnp.float32)}, state, params)
        assert u["w"].dtype == jnp.float32
        # float32 arithmetic on the same bfloat16 state: float32 rounding only, relative to
        # the terms (up to about 1; a momentum step can cancel down to 1e-4): a few ulps of 1
        np.testing.assert_allclose(np.asarray(u["w"], np.float64), want, rtol=2e-6, atol=2.4e-7)
    # and the narrow storage is real: float32 storage gives other updates
    wide = {"momentum": gbopt.momentum(LR, MU), "adagrad": gbopt.adagrad(LR, EPS)}.get(name)
    if wide is not None:
        s = wide.init(params)
        for g in grads:
            u32, s = wide.update({"w": jnp.asarray(g, jnp.float32)}, s, params)
        assert np.max(np.abs(np.asarray(u32["w"]) - np.asarray(u["w"]))) > 1e-5


def test_centered_rmsprop_stores_both_statistics_narrow():
    tx = gbopt.rmsprop(LR, centered=True, nu_dtype=jnp.bfloat16)
    state = tx.init({"w": jnp.zeros((4,), jnp.float32)})
    arrays = [x for x in jax.tree.leaves(state) if x.shape == (4,)]
    assert len(arrays) == 2 and all(x.dtype == jnp.bfloat16 for x in arrays)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda d: gbopt.momentum(0.1, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.nesterov(0.1, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.adagrad(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.rmsprop(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.rmsprop_nesterov(0.1, nu_dtype=d), "nu_dtype"),
        (lambda d: gbopt.rmsprop_nesterov(0.1, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.rmsprop(0.1, momentum=0.9, accumulator_dtype=d), "accumulator_dtype"),
        (lambda d: gbopt.trace(0.9, dtype=d), "dtype"),
        (lambda d: gbopt.ema(0.9, dtype=d), "dtype"),
        (lambda d: gbopt.accumulate_square(0.9, dtype=d), "dtype"),
    ],
)
def test_a_storage_dtype_that_is_not_floating_is_refused(build, name):
    for bad in (jnp.int32, jnp.bool_, "banana"):
        with pytest.raises(TypeError, match=f"`{name}` must be a floating-point dtype"):
            build(bad)


# ---------------------------------------------------------------------------------------
# The default storage for bfloat16 parameters, statistic by statistic.

_F32, _B16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)

# Each statistic of gbopt with the storage dtype of each of its fields for a bfloat16
# parameter (None: not a per-parameter array). First moments and copies of an update
# follow the parameters; sums and averages of squares, maxima, step sizes and averages
# whose weight shrinks (1/t) stay float32, as does a first moment that only feeds a
# variance (centered RMSProp's and AdaBelief's m, which enter r - m^2 and |g - m|^2).
DEFAULT_STORAGE = {
    "trace": (lambda: gbopt.trace(0.9), {"trace": _B16}),
    "ema": (lambda: gbopt.ema(0.9), {"mu": _B16}),
    "ema_debiased": (lambda: gbopt.ema(0.9, debias=True), {"mu": _B16}),
    "nadam_momentum": (lambda: gbopt.nadam_momentum(), {"mu": _B16, "mu_product": _F32}),
    "lion_momentum": (lambda: gbopt.lion_momentum(), {"mu": _B16}),
    "adan_momentum": (
        lambda: gbopt.adan_momentum(),
        {"mu": _B16, "delta": _B16, "previous": _B16},
    ),
    "adan_extrapolation": (lambda: gbopt.adan_extrapolation(), {"previous": _B16}),
    "optimistic_gradient": (
        lambda: gbopt.optimistic_gradient(),
        {"previous": _B16, "started": _F32},
    ),
    "accumulate_square": (lambda: gbopt.accumulate_square(0.999), {"nu": _F32}),
    "accumulate_square_sum": (lambda: gbopt.accumulate_square(), {"nu": _F32}),
    "accumulate_centered_square": (
        lambda: gbopt.accumulate_centered_square(0.9),
        {"mu": _F32, "nu": _F32},
    ),
    "accumulate_inf_norm": (lambda: gbopt.accumulate_inf_norm(0.999), {"nu": _F32}),
    "running_max": (lambda: gbopt.running_max(), {"maximum": _F32}),
    "accumulate_belief": (lambda: gbopt.accumulate_belief(), {"mu": _F32, "nu": _F32}),
    "accumulate_yogi_square": (lambda: gbopt.accumulate_yogi_square(), {"nu": _F32}),
    "accumulate_layer_square": (lambda: gbopt.accumulate_layer_square(), {"nu": _F32}),
    "scale_by_update_rms": (lambda: gbopt.scale_by_update_rms(), {"e_x": _F32}),
    "rprop_step_sizes": (
        lambda: gbopt.rprop_step_sizes(0.1),
        {"step_sizes": _F32, "previous": _F32},
    ),
    "averaged_iterate": (lambda: _averaging.averaged_iterate(), {"ax": _F32}),
    "factored_second_moment": (
        lambda: gbopt.factored_second_moment(),
        {"v_row": _F32, "v_col": _F32, "v": _F32},
    ),
    "cover_second_moment": (lambda: gbopt.cover_second_moment(), {"nu": _F32}),
    "scale_by_belief": (lambda: gbopt.scale_by_belief(), {"mu": _F32, "nu": _F32}),
    "scale_by_adan": (
        lambda: gbopt.scale_by_adan(),
        {"mu": _B16, "delta": _B16, "nu": _F32, "previous": _B16},
    ),
}


def _fields(state):
    """The statistics' NamedTuple inside ``state`` (under a step count when alone)."""
    while isinstance(state, gbopt.StepCountState):
        state = state.inner_state
    return state


@pytest.mark.parametrize("name", list(DEFAULT_STORAGE))
def test_default_storage_of_every_statistic_for_bfloat16_parameters(name):
    make, want = DEFAULT_STORAGE[name]
    tx = make()
    params = {"w": jnp.full((4, 3), 0.5, jnp.bfloat16)}
    full = tx.init(params)
    assert set(_fields(full)._fields) == set(want)
    grads = {"w": jnp.asarray(np.linspace(-1, 1, 12).reshape(4, 3), jnp.bfloat16)}
    for _ in range(2):  # the storage is kept across updates
        updates, full = tx.update(grads, full, params)
        assert updates["w"].dtype == jnp.bfloat16
    state = _fields(full)
    for field, dtype in want.items():
        value = getattr(state, field)
        leaves = jax.tree.leaves(value)
        assert leaves and all(x.dtype == dtype for x in leaves), (field, leaves)
    # float32 parameters: every statistic in float32
    state32 = _fields(tx.init({"w": jnp.zeros((4, 3), jnp.float32)}))
    assert all(x.dtype == _F32 for x in jax.tree.leaves(state32) if x.dtype != jnp.int32)


def test_optax_bfloat16_second_moment_freezes_where_gbopt_float32_one_tracks_float64():
    """Why second moments stay float32: with b2 = 0.999 a new square moves nu by 1e-3 of
    itself, less than half a bfloat16 ulp (at least 2^-9 of the value), once nu is within
    a factor of about 3 of the square. optax keeps nu in the parameters' dtype."""
    g = jnp.asarray([0.5, 1.0, 3.0], jnp.bfloat16)
    p = jnp.zeros(3, jnp.bfloat16)
    steps = 1000

    def nus(tx):
        def body(state, _):
            _, state = tx.update(g, state, p)
            return state, gbopt.state_get(state, "nu")

        _, out = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(tx.init(p))
        return out

    theirs, ours = nus(optax.adam(1e-3)), nus(gbopt.adam(1e-3))
    assert theirs.dtype == jnp.bfloat16 and ours.dtype == jnp.float32
    t = np.arange(1, steps + 1)[:, None]
    exact = (1 - 0.999**t) * np.asarray(g, np.float64) ** 2  # float64: still rising
    theirs, ours = np.asarray(theirs, np.float64), np.asarray(ours, np.float64)
    # optax's stops moving before step 400 and is left 20-30 % below the value at 1000
    np.testing.assert_array_equal(theirs[400:], np.broadcast_to(theirs[399], theirs[400:].shape))
    assert np.all(theirs[-1] < 0.8 * exact[-1])
    # gbopt's float32 nu follows the float64 value (float32 rounding over 1000 steps)
    np.testing.assert_allclose(ours, exact, rtol=1e-6)
    assert np.all(np.diff(ours[:, 1]) > 0)  # it never stops


def test_a_bfloat16_first_moment_of_complex_parameters_rounds_each_part():
    """mu_dtype=bfloat16 on complex64: pairs of bfloat16, each part rounded after each step,
    the arithmetic in complex64 (a complex128 model that rounds the parts agrees)."""
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=6) + 1j * rng.normal(size=6) for _ in range(10)]
    p = jnp.zeros(6, jnp.complex64)
    tx = gbopt.adam(0.1, mu_dtype=jnp.bfloat16)
    state = tx.init(p)
    assert gbopt.state_get(state, "mu").shape == (6, 2)
    step = jax.jit(tx.update)
    m, v = np.zeros(6, complex), np.zeros(6)
    for t, g in enumerate(grads, 1):
        g = np.asarray(g.astype(np.complex64), complex)
        m_new = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * np.abs(g) ** 2
        want = -0.1 * (m_new / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        m = _bf16(m_new.real) + 1j * _bf16(m_new.imag)
        u, state = step(jnp.asarray(g, jnp.complex64), state, p)
        assert u.dtype == jnp.complex64
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6)
        stored = np.asarray(gbopt.state_get(state, "mu"), np.float64)
        np.testing.assert_array_equal(stored[:, 0], m.real)
        np.testing.assert_array_equal(stored[:, 1], m.imag)


def test_hand_written_matrix_statistics_follow_the_same_policy():
    """Muon's and Shampoo's momenta follow the parameters; SOAP's statistics (its first
    moment lives in a rotating eigenbasis, re-projected at each refresh) and every
    Kronecker factor stay float32."""
    params = {"w": jnp.asarray(np.linspace(-1, 1, 48).reshape(8, 6), jnp.bfloat16)}
    grads = {"w": jnp.asarray(np.linspace(1, -1, 48).reshape(8, 6), jnp.bfloat16)}
    cases = {
        "nesterov_ema": (gbopt.nesterov_ema(0.95), {"mu": _B16}),
        "shampoo": (
            gbopt.scale_by_shampoo(),
            {"momentum": _B16, "graft_momentum": _B16, "left": _F32, "graft": _F32},
        ),
        "soap": (gbopt.scale_by_soap(), {"mu": _F32, "nu": _F32, "left": _F32}),
    }
    for name, (tx, want) in cases.items():
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, params)
            assert updates["w"].dtype == jnp.bfloat16, name
        for field, dtype in want.items():
            leaves = jax.tree.leaves(getattr(_fields(state), field))
            assert leaves and all(x.dtype == dtype for x in leaves), (name, field)


@pytest.mark.parametrize(
    "params_dtype, storage",
    [
        (jnp.bfloat16, None),
        (jnp.float16, None),
        (jnp.bfloat16, jnp.float32),
        (jnp.bfloat16, jnp.complex64),
        (jnp.float32, jnp.complex64),
    ],
)
def test_every_storage_runs_under_strict_dtype_promotion(params_dtype, storage):
    """Narrow or complex storage adds no implicit promotion (float32 with bfloat16 is one)."""
    builds = [
        gbopt.adam(0.1, mu_dtype=storage),
        gbopt.sgd(0.1, momentum=0.9, accumulator_dtype=storage),
        gbopt.rmsprop(0.1, momentum=0.9, centered=True, accumulator_dtype=storage),
        gbopt.lion(0.1, mu_dtype=storage),
        gbopt.adan(0.1),
        gbopt.nadam(0.1),
        gbopt.muon(0.1),
        gbopt.optimistic_gradient_descent(0.1),
    ]
    params = {"w": jnp.ones((3, 2), params_dtype), "b": jnp.ones(2, params_dtype)}
    with jax.numpy_dtype_promotion("strict"):
        for tx in builds:
            state = tx.init(params)
            for _ in range(2):
                updates, state = tx.update(params, state, params)
            assert all(u.dtype == params_dtype for u in jax.tree.leaves(updates))
