"""Every optimizer against an independent NumPy float64 implementation of its MATH.md rule.

The problem: a nested pytree (dicts, a tuple, a scalar leaf) whose leaves have gradients of
very different magnitudes (scales 1e-3 to 1e3), a non-quadratic loss, and ``eps`` large
enough (1e-2) that where it sits (inside or outside the root) changes the trajectory.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt

STEPS = 120
EPS = 1e-2  # large, so that eps placement shows at the 1e-3 level
SCALES = {"dense": {"w": 1e3, "b": 1e-3}, "pair": (1.0, 30.0)}


def _init_tree():
    rng = np.random.default_rng(0)
    return {
        "dense": {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))},
        "pair": (rng.normal(size=(2,)), np.asarray(rng.normal())),
    }


def _np_grad(tree):
    """Gradient of sum_leaves scale * (0.5 w^2 - 0.3 w + 0.05 w^4), in NumPy float64."""
    return jax.tree.map(lambda w, s: s * (w - 0.3 + 0.2 * w**3), tree, SCALES)


def _jax_loss(tree):
    terms = jax.tree.map(lambda w, s: s * jnp.sum(0.5 * w**2 - 0.3 * w + 0.05 * w**4), tree, SCALES)
    return sum(jax.tree.leaves(terms))


# ---- NumPy float64 rules, written from MATH.md, one function per rule ------------------


def ref_sgd(w, lr):
    for _ in range(STEPS):
        g = _np_grad(w)
        w = jax.tree.map(lambda w, g: w - lr * g, w, g)
    return w


def ref_momentum(w, lr, mu, nesterov):
    v = jax.tree.map(np.zeros_like, w)
    for _ in range(STEPS):
        point = jax.tree.map(lambda w, v: w + mu * v, w, v) if nesterov else w
        g = _np_grad(point)  # the book's form: gradient at the interim point w + mu v
        v = jax.tree.map(lambda v, g: mu * v - lr * g, v, g)
        w = jax.tree.map(lambda w, v: w + v, w, v)
    # Nesterov: gbopt holds the interim point phi = w + mu v (MATH.md rule 3).
    return jax.tree.map(lambda w, v: w + mu * v, w, v) if nesterov else w


def ref_adagrad(w, lr, eps):
    r = jax.tree.map(np.zeros_like, w)
    for _ in range(STEPS):
        g = _np_grad(w)
        r = jax.tree.map(lambda r, g: r + g * g, r, g)
        w = jax.tree.map(lambda w, g, r: w - lr * g / (eps + np.sqrt(r)), w, g, r)
    return w


def ref_rmsprop(w, lr, rho, eps):
    r = jax.tree.map(np.zeros_like, w)
    for _ in range(STEPS):
        g = _np_grad(w)
        r = jax.tree.map(lambda r, g: rho * r + (1 - rho) * g * g, r, g)
        w = jax.tree.map(lambda w, g, r: w - lr * g / np.sqrt(eps + r), w, g, r)
    return w


def ref_rmsprop_nesterov(w, lr, rho, mu, eps):
    r = jax.tree.map(np.zeros_like, w)
    v = jax.tree.map(np.zeros_like, w)
    for _ in range(STEPS):
        g = _np_grad(jax.tree.map(lambda w, v: w + mu * v, w, v))
        r = jax.tree.map(lambda r, g: rho * r + (1 - rho) * g * g, r, g)
        v = jax.tree.map(lambda v, g, r: mu * v - lr * g / np.sqrt(eps + r), v, g, r)
        w = jax.tree.map(lambda w, v: w + v, w, v)
    return jax.tree.map(lambda w, v: w + mu * v, w, v)


def ref_adam(w, lr, b1, b2, eps):
    s = jax.tree.map(np.zeros_like, w)
    r = jax.tree.map(np.zeros_like, w)
    for t in range(1, STEPS + 1):
        g = _np_grad(w)
        s = jax.tree.map(lambda s, g: b1 * s + (1 - b1) * g, s, g)
        r = jax.tree.map(lambda r, g: b2 * r + (1 - b2) * g * g, r, g)
        w = jax.tree.map(
            lambda w, s, r: w - lr * (s / (1 - b1**t)) / (np.sqrt(r / (1 - b2**t)) + eps), w, s, r
        )
    return w


CASES = {
    "sgd": (lambda: gbopt.sgd(1e-4), lambda w: ref_sgd(w, 1e-4)),
    "gd": (lambda: gbopt.gd(1e-4), lambda w: ref_sgd(w, 1e-4)),
    "momentum": (
        lambda: gbopt.momentum(2e-5, momentum=0.9),
        lambda w: ref_momentum(w, 2e-5, 0.9, nesterov=False),
    ),
    "nesterov": (
        lambda: gbopt.nesterov(2e-5, momentum=0.9),
        lambda w: ref_momentum(w, 2e-5, 0.9, nesterov=True),
    ),
    "adagrad": (lambda: gbopt.adagrad(1e-2, eps=EPS), lambda w: ref_adagrad(w, 1e-2, EPS)),
    "rmsprop": (
        lambda: gbopt.rmsprop(1e-3, decay=0.9, eps=EPS),
        lambda w: ref_rmsprop(w, 1e-3, 0.9, EPS),
    ),
    "rmsprop_nesterov": (
        lambda: gbopt.rmsprop_nesterov(2e-4, decay=0.9, momentum=0.8, eps=EPS),
        lambda w: ref_rmsprop_nesterov(w, 2e-4, 0.9, 0.8, EPS),
    ),
    "adam": (
        lambda: gbopt.adam(1e-3, b1=0.9, b2=0.99, eps=EPS),
        lambda w: ref_adam(w, 1e-3, 0.9, 0.99, EPS),
    ),
}


def _run(tx, w0, steps=STEPS):
    params = jax.tree.map(jnp.asarray, w0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(_jax_loss)(params), state, params)
        return gbopt.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def _max_rel_err(got, want):
    errs = jax.tree.map(
        lambda a, b: np.max(np.abs(np.asarray(a) - b) / np.maximum(np.abs(b), 1e-30)), got, want
    )
    return max(jax.tree.leaves(errs))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_float64_rule(name):
    make, ref = CASES[name]
    w0 = _init_tree()
    want = ref(w0)
    with jax.enable_x64(True):
        got = _run(make(), w0)
        assert jax.tree.leaves(got)[0].dtype == jnp.float64
    # The parameters moved (the comparison is not trivially satisfied) ...
    moved = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), want, w0)))
    assert moved > 1e-3
    # ... and follow the float64 rule to 1e-8 relative.
    assert _max_rel_err(got, want) <= 1e-8


@pytest.mark.parametrize(
    "name, other",
    [
        ("adagrad", lambda w: ref_adagrad(w, 1e-2, 0.0)),  # eps removed
        ("rmsprop", lambda w: ref_rmsprop(w, 1e-3, 0.9, 0.0)),
        ("adam", lambda w: ref_adam(w, 1e-3, 0.9, 0.99, 0.0)),
    ],
)
def test_eps_placement_is_visible_in_the_reference_problem(name, other):
    """Guards the test above: with eps = 0 the trajectory differs by far more than 1e-8."""
    assert _max_rel_err(CASES[name][1](_init_tree()), other(_init_tree())) > 1e-4


# ---- Against optax, where optax implements the same rule -------------------------------

OPTAX_SAME_RULE = {
    "sgd": (lambda: gbopt.sgd(1e-4), lambda: optax.sgd(1e-4)),
    "momentum": (lambda: gbopt.momentum(2e-5, 0.9), lambda: optax.sgd(2e-5, momentum=0.9)),
    "nesterov": (
        lambda: gbopt.nesterov(2e-5, 0.9),
        lambda: optax.sgd(2e-5, momentum=0.9, nesterov=True),
    ),
    "rmsprop": (
        lambda: gbopt.rmsprop(1e-3, decay=0.9, eps=EPS),
        lambda: optax.rmsprop(1e-3, decay=0.9, eps=EPS),
    ),
    "rmsprop_nesterov": (
        lambda: gbopt.rmsprop_nesterov(2e-4, decay=0.9, momentum=0.8, eps=EPS),
        lambda: optax.rmsprop(2e-4, decay=0.9, eps=EPS, momentum=0.8, nesterov=True),
    ),
    "adam": (
        lambda: gbopt.adam(1e-3, b1=0.9, b2=0.99, eps=EPS),
        lambda: optax.adam(1e-3, b1=0.9, b2=0.99, eps=EPS),
    ),
}


@pytest.mark.parametrize("name", list(OPTAX_SAME_RULE))
def test_matches_optax_where_optax_has_the_same_rule(name):
    ours, theirs = OPTAX_SAME_RULE[name]
    w0 = _init_tree()
    with jax.enable_x64(True):
        got = _run(ours(), w0)
        want = _run(theirs(), w0)
    assert _max_rel_err(got, jax.tree.map(np.asarray, want)) <= 1e-10


def test_optax_adagrad_is_not_the_textbook_rule():
    """optax puts AdaGrad's eps inside the root and starts r at 0.1 (CONVENTIONS.md §1).

    Even with optax's accumulator started at 0, the eps placement alone moves the
    trajectory far from the book's δ + √r, which gbopt follows.
    """
    w0 = _init_tree()
    with jax.enable_x64(True):
        ours = _run(gbopt.adagrad(1e-2, eps=EPS), w0)
        theirs = _run(optax.adagrad(1e-2, initial_accumulator_value=0.0, eps=EPS), w0)
    book = ref_adagrad(w0, 1e-2, EPS)
    assert _max_rel_err(ours, book) <= 1e-8
    assert _max_rel_err(jax.tree.map(np.asarray, theirs), book) > 1e-4


def test_momentum_with_a_schedule_keeps_the_learning_rate_inside_the_velocity():
    """The book (and gbopt) fold α_t into v; optax.sgd multiplies the buffer by α_t."""
    sched = lambda count: 1e-5 * (1.0 + count)  # noqa: E731
    w0 = _init_tree()
    mu = 0.9
    w, v = w0, jax.tree.map(np.zeros_like, w0)
    for t in range(30):
        g = _np_grad(w)
        v = jax.tree.map(lambda v, g: mu * v - 1e-5 * (1.0 + t) * g, v, g)
        w = jax.tree.map(lambda w, v: w + v, w, v)
    with jax.enable_x64(True):
        ours = _run(gbopt.momentum(sched, momentum=mu), w0, steps=30)
        theirs = _run(optax.sgd(sched, momentum=mu), w0, steps=30)
    assert _max_rel_err(ours, w) <= 1e-8
    assert _max_rel_err(jax.tree.map(np.asarray, theirs), w) > 1e-4
