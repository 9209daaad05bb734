"""gbopt.pytorch.lr_scheduler against torch.optim.lr_scheduler 2.13 (CPU, float64).

Each case builds a PyTorch scheduler on a one-parameter optimizer and records the
learning rate (and momentum) each optimizer step uses; the gbopt schedule, called the
way gbopt's optimizers call it (jitted, int32 count, x64 enabled), must give the same
sequence to 1e-12.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt
from gbopt import _numerics
from gbopt.pytorch import lr_scheduler as ls

torch = pytest.importorskip("torch")
S = torch.optim.lr_scheduler

TOL = 1e-12
LR = 0.1


def torch_sequence(make, steps, *, optimizer="SGD"):
    """The lr (and momentum or betas[0]) of each of ``steps`` optimizer steps."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    if optimizer == "SGD":
        opt = torch.optim.SGD([p], lr=LR, momentum=0.9)
    else:
        opt = torch.optim.Adam([p], lr=LR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        lrs, moms = [], []
        for _ in range(steps):
            group = opt.param_groups[0]
            lrs.append(group["lr"])
            moms.append(group["momentum"] if optimizer == "SGD" else group["betas"][0])
            assert group["lr"] == sched.get_last_lr()[0]
            p.grad = torch.ones(1, dtype=torch.float64)
            opt.step()
            sched.step()
    return np.asarray(lrs, np.float64), np.asarray(moms, np.float64)


def gbopt_sequence(schedule, steps):
    """``schedule`` at counts 0..steps-1, as gbopt's update calls it (jit, int32 count)."""
    with jax.enable_x64(True):
        counts = jnp.arange(steps, dtype=jnp.int32)
        values = jax.jit(jax.vmap(lambda c: _numerics.schedule_value(schedule, c)))(counts)
        assert values.dtype == jnp.float64
        return np.asarray(values)


def lam(epoch):
    """Warm-up then decay, in jax.numpy (works on ints and traced counts)."""
    return jnp.where(epoch < 10, (epoch + 1) / 10, 0.5 * (1 + jnp.cos(jnp.pi * epoch / 150)))


def lam_torch(epoch):
    return (epoch + 1) / 10 if epoch < 10 else 0.5 * (1 + math.cos(math.pi * epoch / 150))


# (id, torch scheduler builder, gbopt schedule, steps)
CASES = [
    ("LambdaLR", lambda o: S.LambdaLR(o, lam_torch), ls.LambdaLR(LR, lam), 200),
    (
        "MultiplicativeLR",
        lambda o: S.MultiplicativeLR(o, lambda e: 0.99 if e % 2 else 0.97),
        ls.MultiplicativeLR(LR, lambda e: jnp.where(e % 2 == 1, 0.99, 0.97)),
        120,
    ),
    ("StepLR", lambda o: S.StepLR(o, 30), ls.StepLR(LR, 30), 100),
    ("StepLR-gamma", lambda o: S.StepLR(o, 7, gamma=0.7), ls.StepLR(LR, 7, gamma=0.7), 100),
    (
        "MultiStepLR",
        lambda o: S.MultiStepLR(o, [10, 25, 25, 60], gamma=0.5),
        ls.MultiStepLR(LR, [25, 10, 60, 25], gamma=0.5),
        100,
    ),
    ("ConstantLR", lambda o: S.ConstantLR(o), ls.ConstantLR(LR), 50),
    (
        "ConstantLR-args",
        lambda o: S.ConstantLR(o, factor=0.25, total_iters=17),
        ls.ConstantLR(LR, factor=0.25, total_iters=17),
        50,
    ),
    ("LinearLR", lambda o: S.LinearLR(o), ls.LinearLR(LR), 50),
    (
        "LinearLR-decay",
        lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=40),
        ls.LinearLR(LR, start_factor=1.0, end_factor=0.05, total_iters=40),
        60,
    ),
    (
        "LinearLR-warmup",
        lambda o: S.LinearLR(o, start_factor=0.01, total_iters=33),
        ls.LinearLR(LR, start_factor=0.01, total_iters=33),
        60,
    ),
    ("ExponentialLR", lambda o: S.ExponentialLR(o, 0.97), ls.ExponentialLR(LR, 0.97), 300),
    ("PolynomialLR", lambda o: S.PolynomialLR(o), ls.PolynomialLR(LR), 20),
    (
        "PolynomialLR-power",
        lambda o: S.PolynomialLR(o, total_iters=40, power=2.5),
        ls.PolynomialLR(LR, total_iters=40, power=2.5),
        60,
    ),
    (
        "CosineAnnealingLR",
        lambda o: S.CosineAnnealingLR(o, 50),
        ls.CosineAnnealingLR(LR, 50),
        300,
    ),
    (
        "CosineAnnealingLR-eta_min",
        lambda o: S.CosineAnnealingLR(o, 10, eta_min=0.01),
        ls.CosineAnnealingLR(LR, 10, eta_min=0.01),
        300,
    ),
    (  # many cycles: PyTorch's recursion drifts from the exact cosine (9e-14 here)
        "CosineAnnealingLR-long",
        lambda o: S.CosineAnnealingLR(o, 7, eta_min=0.01),
        ls.CosineAnnealingLR(LR, 7, eta_min=0.01),
        3000,
    ),
    (
        "CosineAnnealingLR-short",
        lambda o: S.CosineAnnealingLR(o, 3, eta_min=0.09),
        ls.CosineAnnealingLR(LR, 3, eta_min=0.09),
        100,
    ),
    (
        "CosineAnnealingWarmRestarts",
        lambda o: S.CosineAnnealingWarmRestarts(o, 10),
        ls.CosineAnnealingWarmRestarts(LR, 10),
        100,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult",
        lambda o: S.CosineAnnealingWarmRestarts(o, 5, T_mult=2, eta_min=1e-3),
        ls.CosineAnnealingWarmRestarts(LR, 5, T_mult=2, eta_min=1e-3),
        200,
    ),
    (
        "CosineAnnealingWarmRestarts-T_mult3",
        lambda o: S.CosineAnnealingWarmRestarts(o, 1, T_mult=3),
        ls.CosineAnnealingWarmRestarts(LR, 1, T_mult=3),
        150,
    ),
    (
        "SequentialLR",
        lambda o: S.SequentialLR(
            o, [S.ConstantLR(o, factor=0.1, total_iters=20), S.ExponentialLR(o, 0.9)], [20]
        ),
        ls.SequentialLR(
            [ls.ConstantLR(LR, factor=0.1, total_iters=20), ls.ExponentialLR(LR, 0.9)], [20]
        ),
        60,
    ),
    (
        "SequentialLR-warmup-cosine",
        lambda o: S.SequentialLR(
            o,
            [
                S.LinearLR(o, start_factor=0.01, total_iters=10),
                S.CosineAnnealingLR(o, 90, eta_min=1e-3),
                S.StepLR(o, 5, gamma=0.5),
            ],
            [10, 100],
        ),
        ls.SequentialLR(
            [
                ls.LinearLR(LR, start_factor=0.01, total_iters=10),
                ls.CosineAnnealingLR(LR, 90, eta_min=1e-3),
                ls.StepLR(LR, 5, gamma=0.5),
            ],
            [10, 100],
        ),
        150,
    ),
    (
        "SequentialLR-lambda-restarts",
        lambda o: S.SequentialLR(
            o, [S.LambdaLR(o, lam_torch), S.CosineAnnealingWarmRestarts(o, 7)], [30]
        ),
        ls.SequentialLR([ls.LambdaLR(LR, lam), ls.CosineAnnealingWarmRestarts(LR, 7)], [30]),
        100,
    ),
    (
        "ChainedScheduler",
        lambda o: S.ChainedScheduler(
            [S.ConstantLR(o, factor=0.1, total_iters=20), S.ExponentialLR(o, 0.9)]
        ),
        ls.ChainedScheduler(
            [ls.ConstantLR(LR, factor=0.1, total_iters=20), ls.ExponentialLR(LR, 0.9)]
        ),
        60,
    ),
    (
        "ChainedScheduler-warmup-cosine-step",
        lambda o: S.ChainedScheduler(
            [
                S.LinearLR(o, start_factor=0.1, total_iters=15),
                S.CosineAnnealingLR(o, 100),
                S.MultiStepLR(o, [40, 70], gamma=0.5),
                S.PolynomialLR(o, total_iters=200, power=0.5),
            ]
        ),
        ls.ChainedScheduler(
            [
                ls.LinearLR(LR, start_factor=0.1, total_iters=15),
                ls.CosineAnnealingLR(LR, 100),
                ls.MultiStepLR(LR, [40, 70], gamma=0.5),
                ls.PolynomialLR(LR, total_iters=200, power=0.5),
            ]
        ),
        100,
    ),
    (
        "OneCycleLR",
        lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=100),
        ls.OneCycleLR(1.0, total_steps=100),
        100,
    ),
    (
        "OneCycleLR-linear",
        lambda o: S.OneCycleLR(o, 0.5, total_steps=77, anneal_strategy="linear", pct_start=0.25),
        ls.OneCycleLR(0.5, total_steps=77, anneal_strategy="linear", pct_start=0.25),
        77,
    ),
    (
        "OneCycleLR-three_phase",
        lambda o: S.OneCycleLR(
            o,
            2.0,
            epochs=6,
            steps_per_epoch=15,
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
        ls.OneCycleLR(
            2.0,
            epochs=6,
            steps_per_epoch=15,
            three_phase=True,
            div_factor=10.0,
            final_div_factor=100.0,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
        90,
    ),
    (
        "CyclicLR",
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=10),
        ls.CyclicLR(0.01, 0.1, step_size_up=10),
        100,
    ),
    (
        "CyclicLR-triangular2",
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=7, step_size_down=13, mode="triangular2"),
        ls.CyclicLR(0.01, 0.1, step_size_up=7, step_size_down=13, mode="triangular2"),
        150,
    ),
    (
        "CyclicLR-exp_range",
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=9, mode="exp_range", gamma=0.99),
        ls.CyclicLR(0.01, 0.1, step_size_up=9, mode="exp_range", gamma=0.99),
        150,
    ),
    (
        "CyclicLR-scale_fn-iterations",
        lambda o: S.CyclicLR(
            o,
            0.02,
            0.2,
            step_size_up=5,
            scale_fn=lambda x: 1 / (1 + 0.01 * x),
            scale_mode="iterations",
            base_momentum=0.7,
            max_momentum=0.95,
        ),
        ls.CyclicLR(
            0.02,
            0.2,
            step_size_up=5,
            scale_fn=lambda x: 1 / (1 + 0.01 * x),
            scale_mode="iterations",
            base_momentum=0.7,
            max_momentum=0.95,
        ),
        100,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_lr_and_momentum_sequences_match_torch(case, optimizer):
    name, make, schedule, steps = case
    lrs, moms = torch_sequence(make, steps, optimizer=optimizer)
    got = gbopt_sequence(schedule, steps)
    assert np.max(np.abs(got - lrs)) <= TOL
    assert np.ptp(lrs) > 1e-3  # the sequence moves, so the comparison can fail
    if schedule.momentum is not None:
        got_m = gbopt_sequence(schedule.momentum, steps)
        assert np.max(np.abs(got_m - moms)) <= TOL
        assert np.ptp(moms) > 1e-2
    elif name.startswith(("OneCycleLR", "CyclicLR")):
        pytest.fail("cycle_momentum=True must give a momentum schedule")


def test_without_cycle_momentum_torch_keeps_the_momentum_and_we_give_none():
    lrs, moms = torch_sequence(lambda o: S.OneCycleLR(o, 1.0, 50, cycle_momentum=False), 50)
    assert np.all(moms == 0.9)
    assert ls.OneCycleLR(1.0, 50, cycle_momentum=False).momentum is None
    assert ls.CyclicLR(0.1, 1.0, cycle_momentum=False).momentum is None


def test_onecycle_holds_its_last_value_where_torch_raises():
    sched = ls.OneCycleLR(1.0, total_steps=20)
    values = gbopt_sequence(sched, 30)
    assert np.all(values[20:] == values[20])
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    s = S.OneCycleLR(opt, 1.0, total_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(20):
            s.step()
        with pytest.raises(ValueError, match="Tried to step 21 times"):
            s.step()


def test_schedules_are_optax_schedules_too():
    import optax

    sched = ls.OneCycleLR(1.0, total_steps=30)
    with jax.enable_x64(True):
        tx = optax.sgd(sched)
        params = jnp.ones(2)
        state = tx.init(params)
        updates, state = tx.update(jnp.ones(2), state)
        expected = -float(sched(0))
    np.testing.assert_allclose(updates, expected * np.ones(2), rtol=1e-15)


def test_per_epoch_stepping_is_count_floordiv():
    per_epoch = ls.StepLR(LR, 3, gamma=0.5)
    lrs, _ = torch_sequence(lambda o: S.StepLR(o, 3, gamma=0.5), 10)
    got = gbopt_sequence(lambda c: per_epoch(c // 4), 40)
    np.testing.assert_allclose(got, np.repeat(lrs, 4), rtol=0, atol=TOL)


# ---------------------------------------------------------------- trajectories
def _problem_grad(x):
    return x - np.array([1.0, -2.0, 0.5]) + 0.1 * x**3


def _torch_run(opt_name, kwargs, make_sched, steps):
    p = torch.tensor([0.3, 0.2, -0.1], dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, opt_name)([p], foreach=False, **kwargs)
    sched = make_sched(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            p.grad = torch.tensor(_problem_grad(p.detach().numpy()))
            opt.step()
            sched.step()
            out.append(p.detach().numpy().copy())
    return np.asarray(out)


def _gbopt_run(tx, steps):
    with jax.enable_x64(True):
        params = jnp.asarray([0.3, 0.2, -0.1], jnp.float64)
        state = tx.init(params)

        @jax.jit
        def step(params, state, g):
            u, state = tx.update(g, state, params)
            return gbopt.apply_updates(params, u), state

        out = []
        for _ in range(steps):
            params, state = step(params, state, jnp.asarray(_problem_grad(np.asarray(params))))
            out.append(np.asarray(params))
    return np.asarray(out)


def _onecycle():
    return ls.OneCycleLR(0.05, total_steps=200)


def _cyclic():
    return ls.CyclicLR(0.001, 0.05, step_size_up=15, mode="triangular2")


TRAJECTORIES = [
    (
        "SGD-OneCycle",
        "SGD",
        {"lr": 0.1, "momentum": 0.9},
        lambda o: S.OneCycleLR(o, 0.05, total_steps=200),
        _onecycle,
        lambda s: gbopt.pytorch.SGD(lr=s, momentum=s.momentum),
    ),
    (
        "SGD-nesterov-Cyclic",
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        lambda o: S.CyclicLR(o, 0.001, 0.05, step_size_up=15, mode="triangular2"),
        _cyclic,
        lambda s: gbopt.pytorch.SGD(lr=s, momentum=s.momentum, nesterov=True),
    ),
    (
        "SGD-dampening-Cyclic",
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.2},
        lambda o: S.CyclicLR(o, 0.001, 0.05, step_size_up=15, mode="triangular2"),
        _cyclic,
        lambda s: gbopt.pytorch.SGD(lr=s, momentum=s.momentum, dampening=0.2),
    ),
    (
        "RMSprop-OneCycle",
        "RMSprop",
        {"lr": 0.1, "momentum": 0.5},
        lambda o: S.OneCycleLR(o, 0.01, total_steps=200),
        lambda: ls.OneCycleLR(0.01, total_steps=200),
        lambda s: gbopt.pytorch.RMSprop(lr=s, momentum=s.momentum),
    ),
    (
        "AdamW-OneCycle",
        "AdamW",
        {"lr": 0.1, "weight_decay": 0.1},
        lambda o: S.OneCycleLR(o, 0.05, total_steps=200),
        _onecycle,
        lambda s: gbopt.pytorch.AdamW(lr=s, betas=(s.momentum, 0.999), weight_decay=0.1),
    ),
    (
        "Adam-amsgrad-Cyclic",
        "Adam",
        {"lr": 0.1, "amsgrad": True},
        lambda o: S.CyclicLR(o, 0.001, 0.05, step_size_up=15, mode="triangular2"),
        _cyclic,
        lambda s: gbopt.pytorch.Adam(lr=s, betas=(s.momentum, 0.999), amsgrad=True),
    ),
    (
        "NAdam-OneCycle",
        "NAdam",
        {"lr": 0.1},
        lambda o: S.OneCycleLR(o, 0.05, total_steps=200),
        _onecycle,
        lambda s: gbopt.pytorch.NAdam(lr=s, betas=(s.momentum, 0.999)),
    ),
    (
        "Adamax-Cyclic",
        "Adamax",
        {"lr": 0.1},
        lambda o: S.CyclicLR(o, 0.001, 0.05, step_size_up=15, mode="triangular2"),
        _cyclic,
        lambda s: gbopt.pytorch.Adamax(lr=s, betas=(s.momentum, 0.999)),
    ),
    (
        "AdamW-injected-OneCycle",
        "AdamW",
        {"lr": 0.1, "weight_decay": 0.1},
        lambda o: S.OneCycleLR(o, 0.05, total_steps=200),
        _onecycle,
        lambda s: gbopt.inject_hyperparams(gbopt.pytorch.AdamW)(
            lr=s, betas=(s.momentum, 0.999), weight_decay=0.1
        ),
    ),
]


@pytest.fixture
def torch_float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("case", TRAJECTORIES, ids=[c[0] for c in TRAJECTORIES])
def test_scheduled_momentum_trajectories_match_torch(case, torch_float64):
    _, opt_name, kwargs, make_torch, make_sched, make_tx = case
    expected = _torch_run(opt_name, kwargs, make_torch, 200)
    got = _gbopt_run(make_tx(make_sched()), 200)
    assert np.max(np.abs(got - expected)) <= TOL
    # ... and the momentum schedule matters: with a constant momentum it is elsewhere.
    sched = make_sched()
    plain = LR_ONLY[opt_name](sched)
    assert np.max(np.abs(_gbopt_run(plain, 200) - expected)) > 1e-6


LR_ONLY = {
    "SGD": lambda s: gbopt.pytorch.SGD(lr=s, momentum=0.9),
    "RMSprop": lambda s: gbopt.pytorch.RMSprop(lr=s, momentum=0.5),
    "AdamW": lambda s: gbopt.pytorch.AdamW(lr=s, weight_decay=0.1),
    "Adam": lambda s: gbopt.pytorch.Adam(lr=s, amsgrad=True),
    "NAdam": lambda s: gbopt.pytorch.NAdam(lr=s),
    "Adamax": lambda s: gbopt.pytorch.Adamax(lr=s),
}


def test_injected_betas_are_an_array_in_the_state_and_can_be_set():
    with jax.enable_x64(True):
        tx = gbopt.inject_hyperparams(gbopt.pytorch.AdamW)(lr=1e-2, betas=(0.9, 0.999))
        state = tx.init(jnp.zeros(3))
        np.testing.assert_array_equal(state.hyperparams["betas"], [0.9, 0.999])
        state = gbopt.set_hyperparams(state, betas=(0.5, 0.99))
        _, state = tx.update(jnp.ones(3), state, jnp.zeros(3))
        np.testing.assert_array_equal(state.hyperparams["betas"], [0.5, 0.99])
        # The first Adam step is lr * sign(g) whatever the betas; the second is not.
        ref = gbopt.pytorch.AdamW(lr=1e-2, betas=(0.5, 0.99))
        rs = ref.init(jnp.zeros(3))
        _, rs = ref.update(jnp.ones(3), rs, jnp.zeros(3))
        g = jnp.asarray([1.0, -2.0, 3.0])
        u1, _ = tx.update(g, state, jnp.zeros(3))
        u2, _ = ref.update(g, rs, jnp.zeros(3))
    np.testing.assert_allclose(u1, u2, rtol=1e-15)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: ls.StepLR(0.1, 0), ValueError, "`step_size` must be an int >= 1"),
        (lambda: ls.StepLR(0.1, 2.5), TypeError, "`step_size` must be an int"),
        (lambda: ls.StepLR(-0.1, 2), ValueError, "`lr` must be a finite number >= 0"),
        (lambda: ls.ConstantLR(0.1, factor=1.5), ValueError, r"`factor` must be in \[0, 1\]"),
        (
            lambda: ls.LinearLR(0.1, start_factor=0.0),
            ValueError,
            r"`start_factor` must be in \(0, 1\]",
        ),
        (lambda: ls.OneCycleLR(1.0), ValueError, "needs `total_steps`"),
        (lambda: ls.OneCycleLR(1.0, 10, pct_start=1), ValueError, "`pct_start` must be a float"),
        (lambda: ls.OneCycleLR(1.0, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
        (lambda: ls.CyclicLR(0.1, 1.0, mode="sawtooth"), ValueError, "`mode` must be"),
        (lambda: ls.CosineAnnealingWarmRestarts(0.1, 10, T_mult=0), ValueError, "`T_mult`"),
        (lambda: ls.SequentialLR([ls.StepLR(0.1, 3)], [5]), ValueError, "one milestone fewer"),
        (
            lambda: ls.SequentialLR(
                [ls.StepLR(0.1, 3), ls.MultiplicativeLR(0.1, lambda c: 0.9)], [5]
            ),
            ValueError,
            "continues from the lr",
        ),
        (
            lambda: ls.ChainedScheduler([ls.StepLR(0.1, 3), ls.LambdaLR(0.1, lam)]),
            ValueError,
            r"`schedulers\[1\]` \(LambdaLR\) is not chainable",
        ),
        (
            lambda: ls.ChainedScheduler([ls.StepLR(0.1, 3), ls.CosineAnnealingLR(0.1, 5, 0.01)]),
            ValueError,
            "not chainable",
        ),
        (
            lambda: ls.ChainedScheduler([ls.StepLR(0.1, 3), ls.ExponentialLR(0.2, 0.9)]),
            ValueError,
            "the same `lr`",
        ),
        (lambda: ls.ChainedScheduler([lambda c: 0.1]), TypeError, r"`schedulers\[0\]` must be"),
    ],
)
def test_arguments_are_checked(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_a_scheduled_beta_shows_its_current_value_in_the_state():
    sched = ls.OneCycleLR(0.05, total_steps=50)
    with jax.enable_x64(True):
        tx = gbopt.pytorch.AdamW(lr=sched, betas=(sched.momentum, 0.999))
        params = jnp.zeros(3)
        state = tx.init(params)
        assert isinstance(state, gbopt.InjectHyperparamsState)
        step = jax.jit(tx.update)
        for count in range(7):
            _, state = step(jnp.ones(3), state, params)
            betas = np.asarray(state.hyperparams["betas"])
            assert betas[0] == float(sched.momentum(count)) and betas[1] == 0.999
    assert np.ptp([float(sched.momentum(c)) for c in range(7)]) > 1e-4
