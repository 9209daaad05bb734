"""gbopt.pytorch's Adadelta, ASGD and Rprop against torch.optim 2.13 (CPU, float64), step by step.

The harness of ``tests/test_pytorch.py``: both sides optimise the same float64 problem,
each computing the NumPy gradient at its own parameters, for 200 steps; the
trajectories must agree to 1e-12 at every step (and ASGD's average too). Adadelta's
rates are in the non-chaotic regime (CONVENTIONS.md §4.8): with lr=0.5, rho=0.5,
eps=1e-3 a 1e-16 difference of rounding grows to 5e-11 along the way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import conventions_problem
from test_pytorch import deviation, gradient, lr_lambda, run_gbopt, run_torch

import gbopt
from gbopt import pytorch as gpt

torch = pytest.importorskip("torch")

STEPS = 200
TOL = 1e-12
A, C, X0 = conventions_problem()


@pytest.fixture
def torch_float64():
    """ASGD keeps eta and mu in torch's default dtype; make it float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


CASES = [
    ("Adadelta", {}),
    ("Adadelta", {"lr": 0.1, "rho": 0.5, "eps": 1e-3}),
    ("Adadelta", {"lr": 0.05, "rho": 0.95, "eps": 1e-2}),
    ("Adadelta", {"lr": 0.2, "eps": 1e-3, "weight_decay": 0.1}),
    ("Adadelta", {"lr": 0.2, "eps": 1e-3, "weight_decay": 0.1, "maximize": True}),
    ("ASGD", {}),
    ("ASGD", {"lr": 2e-2, "lambd": 1e-2, "alpha": 0.5}),
    ("ASGD", {"lr": 1e-2, "t0": 50}),
    ("ASGD", {"lr": 1e-2, "lambd": 0.05, "alpha": 1.0, "t0": 20, "weight_decay": 0.1}),
    ("ASGD", {"lr": 1e-2, "t0": 10, "weight_decay": 0.1, "maximize": True}),
    ("Rprop", {}),
    ("Rprop", {"lr": 1e-3, "etas": (0.3, 1.5)}),
    ("Rprop", {"lr": 1e-2, "step_sizes": (1e-3, 0.05)}),
    ("Rprop", {"lr": 100.0, "step_sizes": (1e-4, 0.5)}),  # clipped from the first step
    ("Rprop", {"lr": 1e-2, "etas": (0.4, 1.1), "maximize": True}),
]


def _case_id(case):
    name, kwargs = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_trajectory_matches_torch(case, torch_float64):
    name, kwargs = case
    expected = run_torch(name, kwargs)
    with jax.enable_x64(True):
        got = run_gbopt(getattr(gpt, name)(**kwargs), sign=-1.0 if kwargs.get("maximize") else 1.0)
    assert deviation(got, expected) <= TOL
    assert max(np.max(np.abs(expected[-1][k] - X0[k])) for k in X0) > 1e-2


# t0 alone moves only the average (checked against torch's ax below), not the iterates.
OPTION_CASES = [c for c in CASES if set(c[1]) - {"maximize"} and c[1] != {"lr": 1e-2, "t0": 50}]


@pytest.mark.parametrize("case", OPTION_CASES, ids=[_case_id(c) for c in OPTION_CASES])
def test_each_option_changes_the_torch_trajectory(case, torch_float64):
    name, kwargs = case
    baseline = {k: v for k, v in kwargs.items() if k == "maximize"}
    assert deviation(run_torch(name, kwargs), run_torch(name, baseline)) > 1e-8


def test_adadelta_under_lambda_lr(torch_float64):
    expected = run_torch("Adadelta", {"lr": 1.0}, schedule=True)
    with jax.enable_x64(True):
        got = run_gbopt(gpt.Adadelta(lr=lambda count: lr_lambda(count)))
    assert deviation(got, expected) <= TOL
    assert deviation(expected, run_torch("Adadelta", {"lr": 1.0})) > 1e-4


@pytest.mark.parametrize("kwargs", [{"lr": 1e-2, "t0": 50}, {"lr": 1e-2, "lambd": 1e-2, "t0": 0}])
def test_asgd_average_matches_torchs_ax(kwargs, torch_float64):
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in X0.items()}
    opt = torch.optim.ASGD(list(params.values()), foreach=False, **kwargs)
    tx = gpt.ASGD(**kwargs)
    with jax.enable_x64(True):
        ours = {k: jnp.asarray(v) for k, v in X0.items()}
        state = tx.init(ours)
        step = jax.jit(lambda p, s, g: tx.update(g, s, p))
        for _ in range(120):
            g = gradient({k: v.detach().numpy() for k, v in params.items()})
            for k, p in params.items():
                p.grad = torch.tensor(g[k])
            opt.step()
            g = gradient({k: np.asarray(v) for k, v in ours.items()})
            updates, state = step(ours, state, g)
            ours = gbopt.apply_updates(ours, updates)
        ax = gbopt.state_get(state, "ax")
    for k, p in params.items():
        theirs = opt.state[p]["ax"].numpy()
        np.testing.assert_allclose(np.asarray(ax[k]), theirs, rtol=0, atol=TOL)
        assert np.max(np.abs(theirs - p.detach().numpy())) > 1e-6  # an average, not the iterate


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: gpt.Rprop(etas=(1.5, 1.2)), ValueError, "`etas` must satisfy"),
        (lambda: gpt.Rprop(etas=0.5), ValueError, "`etas` must be a pair"),
        (lambda: gpt.Rprop(lr=lambda c: 0.1), TypeError, "initial step size"),
        (lambda: gpt.ASGD(lr=lambda c: 0.1), TypeError, "must be a number"),
        (lambda: gpt.ASGD(t0=-1), ValueError, "`t0`"),
        (lambda: gpt.Adadelta(rho=1.0), ValueError, "`rho`"),
        (lambda: gpt.Adadelta(weight_decay=-1), ValueError, "`weight_decay`"),
    ],
)
def test_arguments_are_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()


# ---------------------------------------------------------------- LBFGS
def _torch_lbfgs(kwargs, steps):
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in X0.items()}
    opt = torch.optim.LBFGS(list(params.values()), **kwargs)
    a, c = torch.tensor(A), torch.tensor(C)

    def closure():
        opt.zero_grad()
        x = torch.cat([params["W"].reshape(-1), params["b"]])
        loss = 0.5 * x @ a @ x - c @ x + 0.025 * torch.sum(x**4)
        loss.backward()
        return loss

    path = []
    for _ in range(steps):
        opt.step(closure)
        path.append({k: v.detach().numpy().copy() for k, v in params.items()})
    return path, opt.state[params["W"]]


def _objective(p):
    x = jnp.concatenate([p["W"].reshape(-1), p["b"]])
    return 0.5 * x @ jnp.asarray(A) @ x - jnp.asarray(C) @ x + 0.025 * jnp.sum(x**4)


def _gbopt_lbfgs(kwargs, steps, pass_value=True):
    tx = gpt.LBFGS(**kwargs)
    params = {k: jnp.asarray(v) for k, v in X0.items()}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(_objective)(params)
        extra = {"value": value} if pass_value else {}
        updates, state = tx.update(grads, state, params, value_fn=_objective, **extra)
        return gbopt.apply_updates(params, updates), state

    path = []
    for _ in range(steps):
        params, state = step(params, state)
        path.append({k: np.asarray(v) for k, v in params.items()})
    return path, state


LBFGS_CASES = [
    {"max_iter": 1, "lr": 0.1},
    {},
    {"line_search_fn": "strong_wolfe"},
    {"max_iter": 1, "line_search_fn": "strong_wolfe"},
    {"max_iter": 5, "lr": 0.5, "history_size": 3},
    # (history_size=2 here: 4.7e-12 after 30 steps, the dot products' rounding grows)
    {"max_iter": 7, "max_eval": 9, "history_size": 4, "line_search_fn": "strong_wolfe"},
    {"tolerance_grad": 1e-3, "tolerance_change": 1e-4},
]


@pytest.mark.slow  # 30 torch steps of up to 20 iterations each, then the same in gbopt
@pytest.mark.parametrize(
    "kwargs", LBFGS_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default"
)
def test_lbfgs_one_update_is_one_torch_step(kwargs):
    """Each update is one ``step(closure)`` with its inner iterations: trajectories per step
    and the number of objective evaluations agree with torch (float64, 30 steps)."""
    expected, torch_state = _torch_lbfgs(kwargs, 30)
    with jax.enable_x64(True):
        got, state = _gbopt_lbfgs(kwargs, 30)
    assert deviation(got, expected) <= TOL
    assert int(state.func_evals) == torch_state["func_evals"]
    assert int(state.n_iter) == torch_state["n_iter"]
    assert max(np.max(np.abs(expected[-1][k] - X0[k])) for k in X0) > 1.0


def test_lbfgs_options_change_torchs_trajectory():
    base, _ = _torch_lbfgs({"max_iter": 3}, 3)
    for kwargs in [
        {"max_iter": 3, "line_search_fn": "strong_wolfe"},
        {"max_iter": 3, "lr": 0.5},
        {"max_iter": 3, "history_size": 1},
    ]:
        assert deviation(_torch_lbfgs(kwargs, 3)[0], base) > 1e-6


def test_lbfgs_value_is_optional_and_value_fn_required():
    with jax.enable_x64(True):
        got, _ = _gbopt_lbfgs({"max_iter": 4}, 3, pass_value=False)
    expected, _ = _torch_lbfgs({"max_iter": 4}, 3)
    assert deviation(got, expected) <= TOL
    tx = gpt.LBFGS()
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="value_fn=loss_fn"):
        tx.update(params, tx.init(params), params)


def test_lbfgs_arguments_are_checked():
    with pytest.raises(ValueError, match="`line_search_fn` must be None or 'strong_wolfe'"):
        gpt.LBFGS(line_search_fn="wolfe")
    with pytest.raises(ValueError, match="`history_size`"):
        gpt.LBFGS(history_size=0)
    with pytest.raises(ValueError, match="`lr`"):
        gpt.LBFGS(lr=-1.0)
