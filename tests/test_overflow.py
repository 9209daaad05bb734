"""A finite gradient whose square overflows must not poison the state (issue 13, item 1).

``g = 1e20`` is finite in float32 and bfloat16 but ``g**2 = 1e40`` is not: the second
moment becomes ``inf`` and that element's update 0. optax and PyTorch then keep training
every other element; the moving average written as ``old + (1 - rho)(new - old)`` turned
``inf - inf`` into NaN at the second step (before: parameters ``[nan, ...]`` after five
Adam steps, where optax gives ``[1.0, ...]``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt
from gbopt import _numerics

torch = pytest.importorskip("torch")

STEPS = 6


def _gradients(dtype):
    """Step-dependent gradients: element 0 overflows when squared, the others are small."""
    return [
        np.array([1e20, 0.1 * (k + 1), -0.2, 0.05 * (-1) ** k], np.float32).astype(dtype)
        for k in range(STEPS)
    ]


def _run(tx, dtype=jnp.float32):
    params = {"w": jnp.ones(4, dtype)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for g in _gradients(dtype):
        updates, state = step({"w": jnp.asarray(g, dtype)}, state, params)
        params = gbopt.apply_updates(params, updates)
    return np.asarray(params["w"], np.float64), state


OPTAX_CASES = [
    ("adam", lambda: gbopt.adam(0.1), lambda: optax.adam(0.1)),
    ("adam-nesterov", lambda: gbopt.adam(0.1, nesterov=True), lambda: optax.nadam(0.1)),
    ("rmsprop", lambda: gbopt.rmsprop(0.1, eps=1e-8), lambda: optax.rmsprop(0.1)),
    (
        "rmsprop-momentum-eps-outside",
        lambda: gbopt.rmsprop(0.1, eps=1e-8, eps_in_sqrt=False, momentum=0.5),
        lambda: optax.rmsprop(0.1, eps=1e-8, eps_in_sqrt=False, momentum=0.5),
    ),
    (
        "rmsprop_nesterov",
        lambda: gbopt.rmsprop_nesterov(0.1, eps=1e-8),
        lambda: optax.rmsprop(0.1, eps=1e-8, momentum=0.9, nesterov=True),
    ),
    (
        "adagrad",
        lambda: gbopt.adagrad(0.1, eps=1e-7, initial_accumulator_value=0.1, eps_in_sqrt=True),
        lambda: optax.adagrad(0.1),
    ),
]


@pytest.mark.parametrize(
    "make_gbopt, make_optax", [c[1:] for c in OPTAX_CASES], ids=[c[0] for c in OPTAX_CASES]
)
def test_finite_where_optax_is_finite_float32(make_gbopt, make_optax):
    got, state = _run(make_gbopt())
    want, _ = _run(make_optax())
    assert np.all(np.isfinite(want))  # optax keeps training
    assert np.all(np.isfinite(got))
    assert got[0] == 1.0  # the overflowing element gets a zero update, as in optax
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    for leaf in jax.tree.leaves(state):  # no NaN anywhere in the state (inf is allowed)
        assert not np.any(np.isnan(np.asarray(leaf, np.float64)))


@pytest.mark.parametrize("name", ["adam", "rmsprop", "rmsprop_nesterov"])
def test_bfloat16_parameters_stay_finite(name):
    tx = {
        "adam": gbopt.adam(0.1),
        "rmsprop": gbopt.rmsprop(0.1),
        "rmsprop_nesterov": gbopt.rmsprop_nesterov(0.1),
    }[name]
    got, _ = _run(tx, jnp.bfloat16)
    assert np.all(np.isfinite(got))
    assert got[0] == 1.0


TORCH_CASES = [
    ("Adam", {"lr": 0.1}),
    ("Adam", {"lr": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 0.1}),
    ("NAdam", {"lr": 0.1}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("Adagrad", {"lr": 0.1}),
    ("Adamax", {"lr": 0.1}),
]


@pytest.mark.parametrize(
    "name, kwargs", TORCH_CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in TORCH_CASES]
)
def test_pytorch_presets_finite_where_torch_is_finite(name, kwargs):
    p = torch.ones(4, dtype=torch.float32, requires_grad=True)
    opt = getattr(torch.optim, name)([p], foreach=False, **kwargs)
    for g in _gradients(np.float32):
        p.grad = torch.tensor(g)
        opt.step()
    want = p.detach().numpy().astype(np.float64)
    got, _ = _run(getattr(gbopt.pytorch, name)(**kwargs))
    assert np.all(np.isfinite(want)) and np.all(np.isfinite(got))
    # The other elements train as in torch. Element 0 may differ: torch forms
    # (1 - rho) g g as ((1 - rho) g) g, which for rho = 0.999 overflows only from
    # |g| ~ 6e20, so torch still moves it where gbopt's |g|^2 = inf gives it a zero step.
    np.testing.assert_allclose(got[1:], want[1:], rtol=2e-5, atol=1e-6)


def test_moving_average_is_the_lerp_form_bit_for_bit_where_finite():
    """The fallback changes nothing where the exact form is finite (float64 rules intact)."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        old = jnp.asarray(rng.normal(size=1000) * 10.0 ** rng.integers(-8, 8, 1000))
        new = jnp.asarray(rng.normal(size=1000) * 10.0 ** rng.integers(-8, 8, 1000))
        for decay in (0.9, 0.999, 0.0):
            got = _numerics.moving_average(old, new, decay)
            exact = old + (1.0 - decay) * (new - old)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(exact))
    inf = jnp.float32(jnp.inf)
    both = _numerics.moving_average(
        jnp.array([inf, -inf, 3e38]), jnp.array([inf, -inf, -3e38]), 0.9
    )
    assert np.asarray(both)[0] == np.inf and np.asarray(both)[1] == -np.inf
    assert np.isfinite(np.asarray(both)[2])  # new - old overflows; the plain sum does not
    nan = _numerics.moving_average(jnp.array([jnp.nan]), jnp.array([1.0]), 0.9)
    assert np.isnan(np.asarray(nan)[0])  # a NaN stays NaN (skip_nonfinite's business)
