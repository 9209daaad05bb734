"""Property-based tests (hypothesis) over random pytrees, shapes, dtypes and hyperparameters.

Each property draws a tree of containers (dicts, lists, tuples, ``None``) with leaves of
small shapes (zero-size and scalar included), an optimizer and its hyperparameters, and
checks one of issue 6's invariants or the MATH.md rule against NumPy float64. Example
counts are small and the search is derandomized, so the file is fast and reproducible.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from helpers import storage_mismatches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gbopt

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Shape:
    """A leaf marker: the shape of an array to make (not a pytree node)."""

    def __init__(self, shape):
        self.shape = shape

    def __repr__(self):
        return f"Shape{self.shape}"


SHAPES = st.sampled_from([(), (1,), (2,), (3,), (0,), (2, 3), (3, 1), (0, 2)]).map(Shape)
KEYS = st.sampled_from(["w", "b", "kernel", "bias", "scale"])
LAYOUTS = st.recursive(
    SHAPES | st.just(None),
    lambda children: (
        st.dictionaries(KEYS, children, max_size=3)
        | st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
    ),
    max_leaves=6,
)


def _make(layout, rng, dtype):
    """Arrays of ``dtype`` with standard normal entries, in the layout's structure."""
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), dtype), layout)


def _leaf_paths(layout):
    return [path for path, _ in jax.tree_util.tree_flatten_with_path(layout)[0]]


# ---- hyperparameters ---------------------------------------------------------------------

RATE = st.floats(1e-4, 1.0)
DECAY = st.floats(0.0, 0.999)
MOMENTUM = st.floats(0.01, 0.99)
EPS = st.floats(1e-8, 1e-1)

HYPERPARAMETERS = {
    "sgd": {"learning_rate": RATE},
    "momentum": {"learning_rate": RATE, "momentum": st.floats(0.0, 0.99)},
    "nesterov": {"learning_rate": RATE, "momentum": MOMENTUM},
    "adagrad": {"learning_rate": RATE, "eps": EPS},
    "rmsprop": {"learning_rate": RATE, "decay": DECAY, "eps": EPS},
    "rmsprop_nesterov": {"learning_rate": RATE, "decay": DECAY, "momentum": MOMENTUM, "eps": EPS},
    "adam": {"learning_rate": RATE, "b1": DECAY, "b2": st.floats(0.5, 0.9999), "eps": EPS},
}


@st.composite
def optimizers(draw, name=None):
    """(name, hyperparameters, learning rate at count c) with a constant or a schedule."""
    if name is None:
        name = draw(st.sampled_from(sorted(HYPERPARAMETERS)))
    hp = {k: draw(v) for k, v in HYPERPARAMETERS[name].items()}
    lr = hp["learning_rate"]
    if draw(st.booleans()):
        hp["learning_rate"] = lambda count: lr * 0.9**count
        return name, hp, lambda c: lr * 0.9**c
    return name, hp, lambda c: lr


# ---- MATH.md rules in NumPy float64, per leaf ---------------------------------------------


def reference(name, hp, lr_at, grads):
    """The updates of ``len(grads)`` steps of MATH.md's rule ``name`` for one leaf."""
    g0 = grads[0]
    v, r, s = np.zeros_like(g0), np.zeros_like(g0), np.zeros_like(g0)
    out = []
    for step, g in enumerate(grads, start=1):
        lr = lr_at(step - 1)  # schedules are read at the updates applied before this one
        if name == "sgd":
            u = -lr * g
        elif name in ("momentum", "nesterov"):
            mu = hp["momentum"]
            v = mu * v - lr * g
            # Nesterov (rule 3, reformulated): phi <- phi + mu v - lr g.
            u = mu * v - lr * g if name == "nesterov" else v
        elif name == "adagrad":
            r = r + g * g
            u = -lr * g / (hp["eps"] + np.sqrt(r))
        elif name in ("rmsprop", "rmsprop_nesterov"):
            rho = hp["decay"]
            r = rho * r + (1 - rho) * g * g
            d = lr * g / np.sqrt(hp["eps"] + r)
            if name == "rmsprop":
                u = -d
            else:
                mu = hp["momentum"]
                v = mu * v - d
                u = mu * v - d
        elif name == "adam":
            b1, b2 = hp["b1"], hp["b2"]
            s = b1 * s + (1 - b1) * g
            r = b2 * r + (1 - b2) * g * g
            s_hat, r_hat = s / (1 - b1**step), r / (1 - b2**step)
            u = -lr * s_hat / (np.sqrt(r_hat) + hp["eps"])
        out.append(u)
    return out


@st.composite
def every_optimizer(draw):
    """[(name, hyperparameters, learning rate at count c)] for every optimizer."""
    return [draw(optimizers(name)) for name in sorted(HYPERPARAMETERS)]


NONEMPTY_LAYOUTS = LAYOUTS.filter(lambda t: any(math.prod(s.shape) > 0 for s in jax.tree.leaves(t)))


@settings(SETTINGS, max_examples=12)
@given(every_optimizer(), NONEMPTY_LAYOUTS, st.integers(0, 2**32 - 1))
def test_updates_match_the_numpy_float64_rule(optimizers_, layout, seed):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        params0 = _make(layout, rng, jnp.float64)
        grads = [_make(layout, rng, jnp.float64) for _ in range(3)]
        for name, hp, lr_at in optimizers_:
            tx = getattr(gbopt, name)(**hp)
            params, state, ours = params0, tx.init(params0), []
            for g in grads:
                u, state = tx.update(g, state, params)
                params = gbopt.apply_updates(params, u)
                ours.append(u)
            for i, path in enumerate(_leaf_paths(layout)):
                leaf_grads = [np.asarray(jax.tree.leaves(g)[i]) for g in grads]
                expected = reference(name, hp, lr_at, leaf_grads)
                for step, (u, e) in enumerate(zip(ours, expected, strict=True)):
                    got = np.asarray(jax.tree.leaves(u)[i])
                    assert got.dtype == np.float64
                    np.testing.assert_allclose(
                        got, e, rtol=1e-10, atol=1e-15, err_msg=f"{name} {path} step {step + 1}"
                    )


DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])


@SETTINGS
@given(optimizers(), LAYOUTS, DTYPES, st.integers(0, 2**32 - 1))
def test_structure_dtypes_and_finiteness_are_kept(optimizer, layout, dtype, seed):
    name, hp, _ = optimizer
    rng = np.random.default_rng(seed)
    tx = getattr(gbopt, name)(**hp)
    params = _make(layout, rng, dtype)
    state = tx.init(params)
    state_def = jax.tree.structure(state)
    state_dtypes = [x.dtype for x in jax.tree.leaves(state)]
    # First moments follow the parameters' dtype; every other statistic is float32.
    assert storage_mismatches(state, dtype) in ([], ["no floating statistic"])
    assert all(d in (jnp.float32, jnp.int32, dtype) for d in state_dtypes)
    # An exactly zero gradient from a fresh state: exactly zero updates.
    zero_updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
    assert all(np.all(np.asarray(u, np.float32) == 0) for u in jax.tree.leaves(zero_updates))
    for _ in range(2):
        grads = _make(layout, rng, dtype)
        updates, state = tx.update(grads, state, params)
        assert jax.tree.structure(updates) == jax.tree.structure(grads)
        for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
            assert u.dtype == dtype and u.shape == g.shape
            assert bool(jnp.all(jnp.isfinite(u)))
        assert jax.tree.structure(state) == state_def
        assert [x.dtype for x in jax.tree.leaves(state)] == state_dtypes
        params = gbopt.apply_updates(params, updates)
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))


@st.composite
def mismatches(draw):
    """A layout with a leaf, one leaf path, and how the gradients differ there."""
    layout = draw(LAYOUTS.filter(lambda t: len(jax.tree.leaves(t)) > 0))
    paths = _leaf_paths(layout)
    path = paths[draw(st.integers(0, len(paths) - 1))]
    kind = draw(st.sampled_from(["leading axis", "unit axis", "None", "wrapped in a list"]))
    return layout, path, kind


def _replace_at(tree, path, fn):
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(x) if p == path else x, tree)


@SETTINGS
@given(st.sampled_from(sorted(HYPERPARAMETERS)), mismatches(), st.booleans())
def test_any_mismatch_is_refused_naming_its_path(name, mismatch, jit):
    layout, path, kind = mismatch
    tx = getattr(gbopt, name)(0.1)
    params = _make(layout, np.random.default_rng(0), jnp.float32)
    change = {
        "leading axis": lambda x: jnp.stack([x, x]),  # (2, *shape): broadcasts onto the param
        "unit axis": lambda x: x[None],
        "None": lambda x: None,
        "wrapped in a list": lambda x: [x],
    }[kind]
    grads = _replace_at(params, path, change)
    update = jax.jit(tx.update) if jit else tx.update
    where = re.escape(f"updates{jax.tree_util.keystr(path)}")
    try:
        update(grads, tx.init(params), params)
    except ValueError as error:
        assert re.match(where + r"(\[0\])? (has shape|is)", str(error)), str(error)
    else:
        raise AssertionError(f"{name} accepted gradients with a {kind} at {path}")


BAD = {
    "learning_rate": st.floats(max_value=-1e-12) | st.sampled_from([math.nan, math.inf]),
    "decay": st.floats(min_value=1.0) | st.floats(max_value=-1e-12) | st.just(math.nan),
    "eps": st.floats(max_value=-1e-300) | st.sampled_from([math.nan, math.inf, -math.inf]),
}
KIND = {"learning_rate": "learning_rate", "momentum": "decay", "decay": "decay"}
KIND.update({"b1": "decay", "b2": "decay", "eps": "eps"})


@st.composite
def bad_hyperparameters(draw):
    name = draw(st.sampled_from(sorted(HYPERPARAMETERS)))
    hp = {k: draw(v) for k, v in HYPERPARAMETERS[name].items()}
    argument = draw(st.sampled_from(sorted(hp)))
    hp[argument] = draw(BAD[KIND[argument]])
    return name, argument, hp


@settings(SETTINGS, max_examples=150)
@given(bad_hyperparameters())
def test_any_out_of_range_hyperparameter_is_refused_by_name(bad):
    name, argument, hp = bad
    try:
        getattr(gbopt, name)(**hp)
    except ValueError as error:
        assert str(error).startswith(f"`{argument}` must be"), str(error)
    else:
        raise AssertionError(f"{name} accepted {argument}={hp[argument]!r}")


@SETTINGS
@given(optimizers())
def test_any_in_range_hyperparameter_is_accepted(optimizer):
    name, hp, _ = optimizer
    assert isinstance(getattr(gbopt, name)(**hp), gbopt.GradientTransformation)


@st.composite
def faults(draw):
    """A layout with a non-empty leaf and some (leaf, element, bad value) faults in it."""
    layout = draw(NONEMPTY_LAYOUTS)
    sizes = [math.prod(s.shape) for s in jax.tree.leaves(layout)]
    nonempty = [i for i, n in enumerate(sizes) if n > 0]
    n_faults = draw(st.integers(1, 3))
    chosen = []
    for _ in range(n_faults):
        leaf = draw(st.sampled_from(nonempty))
        element = draw(st.integers(0, sizes[leaf] - 1))
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        chosen.append((leaf, element, value))
    return layout, chosen


def _same_bits(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return all(
        np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb, strict=True)
    )


@SETTINGS
@given(optimizers(), faults(), DTYPES, st.integers(0, 2**32 - 1))
def test_skip_nonfinite_skips_any_fault_and_passes_clean_steps(optimizer, fault, dtype, seed):
    name, hp, _ = optimizer
    layout, chosen = fault
    rng = np.random.default_rng(seed)
    inner = getattr(gbopt, name)(**hp)
    tx = gbopt.skip_nonfinite(inner)
    params = _make(layout, rng, dtype)
    state = tx.init(params)
    clean = _make(layout, rng, dtype)
    updates, after_clean = tx.update(clean, state, params)
    # skip_nonfinite runs the inner step as one compiled computation (inside a lax.cond),
    # so a clean step equals the inner transform's compiled step, to the bit.
    inner_updates, inner_state = jax.jit(inner.update)(clean, inner.init(params), params)
    assert _same_bits(updates, inner_updates)
    assert _same_bits(after_clean.inner_state, inner_state)

    leaves, treedef = jax.tree.flatten(_make(layout, rng, dtype))
    for leaf, element, value in chosen:
        flat = leaves[leaf].reshape(-1).at[element].set(value)
        leaves[leaf] = flat.reshape(leaves[leaf].shape)
    updates, after_fault = tx.update(treedef.unflatten(leaves), after_clean, params)
    assert all(np.all(np.asarray(u, np.float32) == 0) for u in jax.tree.leaves(updates))
    assert _same_bits(after_fault.inner_state, after_clean.inner_state)
    assert int(after_fault.total_skipped) == int(after_fault.consecutive_skipped) == 1
