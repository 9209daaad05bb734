"""The adaptive family (adamw ... lars) against optax 0.2.8 and the papers, step by step.

Each name is called with the same arguments in gbopt and optax (defaults and non-default
values of every argument) and both optimize the same float64 problem for 100 steps: a
nested pytree whose leaves have gradient scales from 1e-3 to 1e3. The trajectories must
agree to 1e-10 at every step. Where a paper's rule differs from optax's, the paper's
formula is written in NumPy and compared with the gbopt composition that the docstring
names.
"""

from __future__ import annotations

import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import nested_tree, storage_mismatches

import gbopt

STEPS = 100
TOL = 1e-10

X0 = nested_tree(np.random.default_rng(3))
TARGET = jax.tree.map(lambda x: 0.5 * np.ones_like(x), X0)
# Gradient scales 1e3 .. 1e-3 across the leaves.
SCALES = {"dense": {"w": 1e3, "b": 1e-3}, "pair": (1e1, 1e-1)}


def loss(params):
    def leaf(x, c, s):
        return s * jnp.sum(0.5 * (x - c) ** 2 + 0.025 * x**4)

    return sum(jax.tree.leaves(jax.tree.map(leaf, params, TARGET, SCALES)))


def trajectories(*txs, steps=STEPS):
    """The parameters after each of ``steps`` steps of each transform, float64.

    One compiled program for all of them (a scan each): compiling dominates these tests.
    """
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), X0)

    def path(tx, p):
        def body(carry, _):
            params, state = carry
            updates, state = tx.update(jax.grad(loss)(params), state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        return jax.lax.scan(body, (p, tx.init(p)), None, length=steps)[1]

    run = jax.jit(lambda p: tuple(path(tx, p) for tx in txs))
    return [jax.tree.map(np.asarray, out) for out in run(params)]


def trajectory(tx, steps=STEPS):
    """The parameters after each of ``steps`` steps of ``tx`` (one compiled scan), float64."""
    return trajectories(tx, steps=steps)[0]


def deviation(a, b) -> float:
    return max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def schedule(count):
    """Warm-up then decay, so that the place of the learning rate matters."""
    return 1e-3 * (count + 1) / (5 + 0.05 * (count + 1) ** 2) * 5


MASK = {"dense": {"w": True, "b": False}, "pair": False}
PREFIX_MASK = {"dense": True, "pair": False}
# Plain SGD at rate 1 on the leaves left out: only the small-scale ones stay stable.
LARS_MASK = {"dense": {"w": True, "b": False}, "pair": (True, False)}

# (name, kwargs): the same call for gbopt and optax. Each argument of each name is set to
# at least one value other than its default.
CASES = [
    ("adamw", {"learning_rate": 1e-3}),
    ("adamw", {"learning_rate": schedule, "b1": 0.8, "b2": 0.99, "weight_decay": 1e-2}),
    ("adamw", {"learning_rate": 1e-3, "eps": 1e-3, "eps_root": 1e-6, "weight_decay": 0.1}),
    ("adamw", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": MASK}),
    ("adamw", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": PREFIX_MASK}),
    ("adamw", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": lambda p: MASK}),
    ("adamw", {"learning_rate": 1e-3, "weight_decay": lambda c: 1e-3 * (c + 1)}),
    ("adamw", {"learning_rate": 1e-3, "nesterov": True, "weight_decay": 0.1}),
    ("nadam", {"learning_rate": 1e-3}),
    ("nadam", {"learning_rate": schedule, "b1": 0.7, "b2": 0.95, "eps": 1e-4}),
    ("nadam", {"learning_rate": 1e-3, "eps_root": 1e-4}),
    ("nadam", {"learning_rate": 1e-3, "nesterov": False}),
    ("nadamw", {"learning_rate": 1e-3}),
    ("nadamw", {"learning_rate": 1e-3, "b1": 0.8, "weight_decay": 0.3, "mask": PREFIX_MASK}),
    ("nadamw", {"learning_rate": 1e-3, "b2": 0.9, "eps": 1e-2, "eps_root": 1e-3}),
    ("nadamw", {"learning_rate": 1e-3, "weight_decay": 0.1, "nesterov": False}),
    ("adamax", {"learning_rate": 1e-3}),
    ("adamax", {"learning_rate": schedule, "b1": 0.8, "b2": 0.9}),
    ("adamax", {"learning_rate": 1e-3, "eps": 1e-2}),
    ("adamaxw", {"learning_rate": 1e-3}),
    ("adamaxw", {"learning_rate": 1e-3, "b1": 0.5, "b2": 0.99, "eps": 1e-3, "weight_decay": 0.2}),
    ("adamaxw", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": MASK}),
    ("amsgrad", {"learning_rate": 1e-3}),
    ("amsgrad", {"learning_rate": schedule, "b1": 0.8, "b2": 0.9, "eps": 1e-3}),
    ("amsgrad", {"learning_rate": 1e-3, "eps_root": 1e-3, "bias_correction_mu": False}),
    ("amsgrad", {"learning_rate": 1e-3, "bias_correction_nu": False}),
    (
        "amsgrad",
        {
            "learning_rate": 1e-3,
            "b2": 0.99,
            "bias_correction_mu": False,
            "bias_correction_nu": False,
        },
    ),
    # RAdam's first steps are plain momentum: a rate small enough for the 1e3-scaled leaf.
    ("radam", {"learning_rate": 2e-4}),
    ("radam", {"learning_rate": lambda c: schedule(c) / 5, "b1": 0.8, "b2": 0.99}),
    ("radam", {"learning_rate": 2e-4, "b2": 0.95, "threshold": 8.0, "eps": 1e-3}),
    ("radam", {"learning_rate": 2e-4, "b2": 0.95, "eps_root": 1e-3, "nesterov": True}),
    ("adabelief", {"learning_rate": 1e-3}),
    ("adabelief", {"learning_rate": schedule, "b1": 0.8, "b2": 0.99}),
    ("adabelief", {"learning_rate": 1e-3, "eps": 1e-8, "eps_root": 1e-6}),
    ("adabelief", {"learning_rate": 1e-3, "b2": 0.9, "nesterov": True}),
    ("yogi", {"learning_rate": 1e-3}),
    ("yogi", {"learning_rate": schedule, "b1": 0.8, "b2": 0.9}),
    ("yogi", {"learning_rate": 1e-3, "eps": 1e-6}),
    ("adan", {"learning_rate": 1e-3}),
    ("adan", {"learning_rate": schedule, "b1": 0.9, "b2": 0.8, "b3": 0.95}),
    ("adan", {"learning_rate": 1e-3, "eps": 1e-4, "eps_root": 1e-3, "weight_decay": 0.1}),
    ("adan", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": MASK}),
    ("novograd", {"learning_rate": 1e-3}),
    ("novograd", {"learning_rate": schedule, "b1": 0.5, "b2": 0.8}),
    ("novograd", {"learning_rate": 1e-3, "eps": 1e-2, "eps_root": 1e-3, "weight_decay": 0.1}),
    ("lamb", {"learning_rate": 1e-3}),
    ("lamb", {"learning_rate": schedule, "b1": 0.8, "b2": 0.99, "eps": 1e-3}),
    ("lamb", {"learning_rate": 1e-3, "eps_root": 1e-3, "weight_decay": 0.1}),
    ("lamb", {"learning_rate": 1e-3, "weight_decay": 0.5, "mask": PREFIX_MASK}),
    ("lars", {"learning_rate": 1.0}),
    ("lars", {"learning_rate": lambda c: 200 * schedule(c), "momentum": 0.5}),
    ("lars", {"learning_rate": 1.0, "weight_decay": 0.1, "trust_coefficient": 2e-3}),
    ("lars", {"learning_rate": 1.0, "weight_decay": 0.1, "weight_decay_mask": MASK}),
    ("lars", {"learning_rate": 1.0, "eps": 1e-2, "trust_ratio_mask": LARS_MASK}),
    ("lars", {"learning_rate": 1.0, "momentum": 0.8, "nesterov": True}),
]

NAMES = sorted({name for name, _ in CASES})


def _case_id(case):
    name, kwargs = case
    shown = [f"{k}={'fn' if callable(v) else v}" for k, v in kwargs.items() if k != "learning_rate"]
    return "-".join([name, *shown]).replace(" ", "")


@pytest.fixture(scope="module", autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _is_default(case) -> bool:
    return list(case[1]) == ["learning_rate"]


# Each name at its defaults runs in the quick suite; the other values of its arguments
# (about four times as many compiles) are marked slow.
TABLE = [
    pytest.param(c, id=_case_id(c), marks=() if _is_default(c) else pytest.mark.slow) for c in CASES
]


@pytest.mark.parametrize("case", TABLE)
def test_trajectory_matches_optax(case):
    name, kwargs = case
    baseline = {"learning_rate": kwargs["learning_rate"]}
    txs = [getattr(optax, name)(**kwargs), getattr(gbopt, name)(**kwargs)]
    if kwargs != baseline:
        txs.append(getattr(optax, name)(**baseline))
    expected, got, *rest = trajectories(*txs)
    assert deviation(got, expected) <= TOL
    # Not a trivial run: the parameters moved, and stayed finite and bounded.
    last = jax.tree.map(lambda x: x[-1], expected)
    assert deviation(last, X0) > 1e-3
    assert max(float(np.max(np.abs(x))) for x in jax.tree.leaves(expected)) < 10
    # The table discriminates: each non-default argument moves optax's trajectory.
    if rest:
        assert deviation(expected, rest[0]) > 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_every_argument_is_exercised(name):
    touched = {k for n, kwargs in CASES if n == name for k in kwargs}
    assert touched == set(inspect.signature(getattr(optax, name)).parameters) - {"mu_dtype"}


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optaxs(name):
    ours = inspect.signature(getattr(gbopt, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for k, p in ours.items():
        assert p.kind == theirs[k].kind, k
        assert p.default == theirs[k].default or (
            p.default is None and theirs[k].default is None
        ), k


@pytest.mark.parametrize("name", NAMES)
def test_docstring_has_the_rule_and_a_reference(name):
    doc = getattr(gbopt, name).__doc__
    assert ".. math::" in doc and "Returns:" in doc and "References:" in doc and "chain(" in doc


# ---------------------------------------------------------------- the papers' rules, in NumPy


def _numpy_gradient(x, c, s):
    return s * ((x - c) + 0.1 * x**3)


def _leaves():
    return jax.tree.leaves(X0), jax.tree.leaves(TARGET), jax.tree.leaves(SCALES)


def amsgrad_paper(lr, b1, b2, steps=STEPS):
    """Reddi et al., Alg. 2 with constant α and β₁: no bias correction, no ε."""
    xs, cs, ss = _leaves()
    out = []
    for x, c, s in zip(xs, cs, ss, strict=True):
        x, m, v, v_max, path = x.copy(), 0 * x, 0 * x, 0 * x, []
        for _ in range(steps):
            g = _numpy_gradient(x, c, s)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            v_max = np.maximum(v_max, v)
            x = x - lr * m / np.sqrt(v_max)
            path.append(x)
        out.append(np.stack(path))
    return out


def yogi_paper(lr, b1, b2, eps, v0, steps=STEPS):
    """Zaheer et al., Alg. 2: no bias correction; m₀ = 0, v₀ = v0."""
    xs, cs, ss = _leaves()
    out = []
    for x, c, s in zip(xs, cs, ss, strict=True):
        x, m, v, path = x.copy(), 0 * x, v0 + 0 * x, []
        for _ in range(steps):
            g = _numpy_gradient(x, c, s)
            m = b1 * m + (1 - b1) * g
            v = v - (1 - b2) * np.sign(v - g * g) * g * g
            x = x - lr * m / (np.sqrt(v) + eps)
            path.append(x)
        out.append(np.stack(path))
    return out


def radam_paper(lr, b1, b2, steps=STEPS):
    """Liu et al., Alg. 2: rectified when ρ_t > 4, no ε."""
    xs, cs, ss = _leaves()
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for x, c, s in zip(xs, cs, ss, strict=True):
        x, m, v, path = x.copy(), 0 * x, 0 * x, []
        for t in range(1, steps + 1):
            g = _numpy_gradient(x, c, s)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
            if rho > 4:
                r = math.sqrt(
                    (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
                )
                x = x - lr * r * m_hat / np.sqrt(v / (1 - b2**t))
            else:
                x = x - lr * m_hat
            path.append(x)
        out.append(np.stack(path))
    return out


PAPERS = [
    (
        "amsgrad-reddi",
        lambda: gbopt.amsgrad(
            1e-3, 0.9, 0.99, eps=0.0, bias_correction_mu=False, bias_correction_nu=False
        ),
        lambda: amsgrad_paper(1e-3, 0.9, 0.99),
    ),
    (
        "yogi-zaheer",
        lambda: gbopt.chain(
            gbopt.divide(
                gbopt.ema(0.9),
                gbopt.chain(gbopt.accumulate_yogi_square(0.99), gbopt.sqrt(), gbopt.add(1e-3)),
            ),
            gbopt.scale_by_learning_rate(1e-3),
        ),
        lambda: yogi_paper(1e-3, 0.9, 0.99, 1e-3, 1e-6),
    ),
    (
        "radam-liu",
        lambda: gbopt.radam(2e-4, 0.9, 0.99, eps=0.0, threshold=4.0),
        lambda: radam_paper(2e-4, 0.9, 0.99),
    ),
]


@pytest.mark.parametrize("make, paper", [p[1:] for p in PAPERS], ids=[p[0] for p in PAPERS])
def test_paper_rule_in_numpy(make, paper):
    got = jax.tree.leaves(trajectory(make()))
    expected = paper()
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected, strict=True)) <= TOL


def test_the_papers_differ_from_optax():
    """The documented differences are real: optax's defaults leave the papers' trajectories."""
    optax_amsgrad = jax.tree.leaves(trajectory(optax.amsgrad(1e-3, 0.9, 0.99, eps=0.0)))
    paper = amsgrad_paper(1e-3, 0.9, 0.99)
    assert (
        max(float(np.max(np.abs(a - b))) for a, b in zip(optax_amsgrad, paper, strict=True)) > 1e-6
    )
    optax_yogi = jax.tree.leaves(trajectory(optax.yogi(1e-3, 0.9, 0.99, 1e-3)))
    paper = yogi_paper(1e-3, 0.9, 0.99, 1e-3, 1e-6)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(optax_yogi, paper, strict=True)) > 1e-6


# ---------------------------------------------------------------- dtypes, tracing, the table


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_params_keep_the_default_storage_and_compile_once(name):
    chex.clear_trace_counter()
    tx = getattr(gbopt, name)(1e-3)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), X0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), jax.grad(loss)(params))
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
    assert all(np.all(np.isfinite(np.asarray(p, np.float32))) for p in jax.tree.leaves(params))
    # first moments in bfloat16, every other statistic in float32
    assert storage_mismatches(state, jnp.bfloat16) == []


# ---------------------------------------------------------------- the new primitives alone


@pytest.mark.parametrize(
    "kwargs", [{}, {"min_norm": 0.5}, {"trust_coefficient": 1e-3, "eps": 1e-2}]
)
def test_scale_by_trust_ratio_is_optaxs(kwargs):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "zero": jnp.zeros(3), "b": jnp.array([0.3])}
    updates = {"w": jnp.ones((2, 3)), "zero": jnp.ones(3), "b": jnp.zeros(1)}
    ours = gbopt.scale_by_trust_ratio(**kwargs)
    theirs = optax.scale_by_trust_ratio(**kwargs)
    got, _ = ours.update(updates, ours.init(params), params)
    expected, _ = theirs.update(updates, theirs.init(params), params)
    chex.assert_trees_all_close(got, expected, rtol=1e-14)


def test_trust_ratio_is_the_ratio_of_norms():
    params = {"w": jnp.array([3.0, 4.0])}  # norm 5
    tx = gbopt.scale_by_trust_ratio()
    u, _ = tx.update({"w": jnp.array([0.0, 2.0])}, tx.init(params), params)  # norm 2
    np.testing.assert_allclose(u["w"], [0.0, 5.0])


def test_rectification_alone_keeps_its_own_count_and_follows_rho():
    b2 = 0.9  # rho_inf = 19; rho_t >= 5 from t = 7 on
    tx = gbopt.rectification(b2)
    state = tx.init(jnp.ones(2))
    assert isinstance(state, gbopt.StepCountState)
    outs = []
    for _ in range(8):
        out, state = tx.update(jnp.full(2, 2.0), state)
        outs.append(float(out[0]))
    rho_inf = 2 / (1 - b2) - 1
    for t, out in enumerate(outs, start=1):
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            assert out == pytest.approx(2.0 / r, rel=1e-12)
        else:
            assert out == 1.0
    assert outs[0] == 1.0 and outs[-1] != 1.0


def test_layer_square_is_one_scalar_per_leaf_started_at_the_first_norm():
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    tx = gbopt.accumulate_layer_square(0.25)
    state = tx.init(params)
    assert jax.tree.map(jnp.shape, state.inner_state.nu) == {"w": (), "b": ()}
    g = {"w": jnp.ones((2, 3)), "b": jnp.full(4, 2.0)}
    out, state = tx.update(g, state)
    np.testing.assert_allclose(out["w"], np.full((2, 3), 6.0))  # |g|^2 = 6, no bias to 0
    out, state = tx.update(jax.tree.map(lambda x: 0 * x, g), state)
    np.testing.assert_allclose(out["b"], np.full(4, 0.25 * 16.0))


def test_adan_pieces_see_no_difference_at_the_first_step():
    tx = gbopt.with_step_count(gbopt.chain(gbopt.adan_momentum(0.9, 0.8)))
    ext = gbopt.adan_extrapolation(0.8)
    g = jnp.array([1.0, -2.0])
    out, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(out, g)  # m_hat = g, v = 0
    e, state = ext.update(g, ext.init(g))
    np.testing.assert_allclose(e, g)
    e, _ = ext.update(3 * g, state)
    np.testing.assert_allclose(e, 3 * g + 0.2 * (2 * g))


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.scale_by_belief(),
        lambda m: m.scale_by_belief(0.8, 0.99, 1e-8, 1e-6, nesterov=True),
        lambda m: m.scale_by_adan(),
        lambda m: m.scale_by_adan(0.9, 0.8, 0.95, 1e-4, 1e-3),
    ],
    ids=["belief", "belief-nesterov", "adan", "adan-options"],
)
def test_scale_by_belief_and_adan_alone_are_optaxs(make):
    """Alone (a count of their own), followed by a learning rate: optax's transform."""
    gbopt_tx = gbopt.chain(make(gbopt), gbopt.scale_by_learning_rate(1e-3))
    optax_tx = optax.chain(make(optax), optax.scale_by_learning_rate(1e-3))
    expected, got = trajectories(optax_tx, gbopt_tx, steps=30)
    assert deviation(got, expected) <= TOL
    assert deviation(jax.tree.map(lambda x: x[-1], expected), X0) > 1e-4


def _belief_from_pieces(b1, b2, eps, eps_root):
    numerator = gbopt.chain(gbopt.ema(b1), gbopt.bias_correction(b1))
    denominator = gbopt.chain(
        gbopt.accumulate_belief(b1, b2, eps_root=eps_root),
        gbopt.bias_correction(b2),
        gbopt.sqrt(),
        gbopt.add(eps),
    )
    return gbopt.with_step_count(gbopt.divide(numerator, denominator))


def _adan_from_pieces(b1, b2, b3, eps, eps_root):
    denominator = gbopt.chain(
        gbopt.adan_extrapolation(b2),
        gbopt.accumulate_square(b3),
        gbopt.bias_correction(b3),
        gbopt.add(eps_root),
        gbopt.sqrt(),
        gbopt.add(eps),
    )
    return gbopt.with_step_count(gbopt.divide(gbopt.adan_momentum(b1, b2), denominator))


@pytest.mark.parametrize(
    "pieces, whole",
    [
        (lambda: _belief_from_pieces(0.9, 0.999, 1e-16, 1e-16), lambda: gbopt.scale_by_belief()),
        (
            lambda: _belief_from_pieces(0.8, 0.99, 1e-8, 1e-6),
            lambda: gbopt.scale_by_belief(0.8, 0.99, 1e-8, 1e-6),
        ),
        (lambda: _adan_from_pieces(0.98, 0.92, 0.99, 1e-8, 0.0), lambda: gbopt.scale_by_adan()),
        (
            lambda: _adan_from_pieces(0.9, 0.8, 0.95, 1e-4, 1e-3),
            lambda: gbopt.scale_by_adan(0.9, 0.8, 0.95, 1e-4, 1e-3),
        ),
    ],
    ids=["belief", "belief-options", "adan", "adan-options"],
)
def test_the_separate_pieces_compose_into_belief_and_adan(pieces, whole):
    """What the docstrings say: a divide of the separate pieces is the fused rule (it keeps
    AdaBelief's m, or Adan's previous gradient, twice)."""
    lr = gbopt.scale_by_learning_rate(1e-3)
    expected, got = trajectories(gbopt.chain(whole(), lr), gbopt.chain(pieces(), lr), steps=30)
    assert deviation(got, expected) <= TOL
    assert deviation(jax.tree.map(lambda x: x[-1], expected), X0) > 1e-4


@pytest.mark.parametrize("name", ["adabelief", "adan"])
def test_state_keeps_as_many_parameter_sized_arrays_as_optax(name):
    """AdaBelief's first moment and Adan's previous gradient are kept once, as in optax."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(5)}

    def arrays(state):
        return sum(1 for x in jax.tree.leaves(state) if jnp.shape(x) == (3, 2))

    ours = arrays(getattr(gbopt, name)(1e-3).init(params))
    assert (
        ours == arrays(getattr(optax, name)(1e-3).init(params)) == {"adabelief": 2, "adan": 4}[name]
    )
    assert gbopt.state_get(getattr(gbopt, name)(1e-3).init(params), "mu")["w"].shape == (3, 2)


def test_scale_by_belief_of_complex_updates_keeps_a_real_belief():
    g = jnp.array([1.0 + 2.0j, -1.0j])
    tx = gbopt.scale_by_belief(0.9, 0.99, eps=0.0, eps_root=0.0)
    out, state = tx.update(g, tx.init(g))
    belief = state.inner_state.nu
    assert belief.dtype == jnp.float64 and not jnp.iscomplexobj(belief)
    # Step 1: m = 0.1 g, s = 0.01 |0.9 g|^2; out = (m / 0.1) / sqrt(s / 0.01) = g / (0.9 |g|).
    np.testing.assert_allclose(belief, 0.01 * np.abs(0.9 * np.asarray(g)) ** 2)
    np.testing.assert_allclose(out, np.asarray(g) / (0.9 * np.abs(np.asarray(g))), rtol=1e-12)


def test_belief_and_yogi_squares_of_complex_updates_are_real():
    g = jnp.array([1.0 + 2.0j, -1.0j])
    for tx in (gbopt.accumulate_belief(0.9, 0.99), gbopt.accumulate_yogi_square(0.99)):
        out, state = tx.update(g, tx.init(g))
        assert state.nu.dtype == jnp.float64 and not jnp.iscomplexobj(state.nu)
    s = 0.01 * np.abs(np.array([1.0 + 2.0j, -1.0j]) * 0.9) ** 2
    np.testing.assert_allclose(
        np.real(
            gbopt.accumulate_belief(0.9, 0.99).update(
                g, gbopt.accumulate_belief(0.9, 0.99).init(g)
            )[0]
        ),
        s,
    )


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: gbopt.rectification(1.0), "`b2` must be in \\[0, 1\\)"),
        (lambda: gbopt.accumulate_belief(0.9, 1.5), "`b2`"),
        (lambda: gbopt.accumulate_yogi_square(initial_accumulator_value=-1.0), "`initial_acc"),
        (lambda: gbopt.adan_momentum(-0.1), "`b1`"),
        (lambda: gbopt.scale_by_trust_ratio(eps=-1.0), "`eps`"),
        (lambda: gbopt.adamw(1e-3, eps_root=-1.0), "`eps_root`"),
        (lambda: gbopt.lars(-1.0), "`learning_rate`"),
        (lambda: gbopt.amsgrad(1e-3, bias_correction_mu=1), "`bias_correction_mu`"),
        (lambda: gbopt.adamw(1e-3, mu_dtype=jnp.int32), "`dtype`"),
    ],
)
def test_arguments_are_checked(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_trust_ratio_needs_the_parameters():
    tx = gbopt.lamb(1e-3)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="needs the parameters"):
        tx.update(params, tx.init(params))
