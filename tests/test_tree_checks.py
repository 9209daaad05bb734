"""Trees that do not match are refused by name; edge-case trees work (issue 6, points 2-4, 8, 9).

* structure (point 2) and shape (point 3) mismatches raise a ``ValueError`` naming the
  first mismatched path in the user's terms, eagerly and under ``jax.jit``, for every
  optimizer, every stateful primitive and every combinator;
* integer and boolean parameters raise a ``TypeError`` naming the path at ``init``
  (point 4; the dtype of updates is tested in ``test_low_precision.py``);
* empty containers, zero-size and scalar leaves and ``None`` work (point 8);
* a transform that needs ``params`` says so by name when called without (point 9).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS

import gbopt
import gbopt.pytorch


def _is_matrix(x):
    return jnp.ndim(x) > 1


def _schedule(count):
    return 0.1 * 0.5 ** (count / 10)


# Every optimizer, every stateful primitive, every combinator: each must refuse
# gradients that do not match the parameters it was initialised with.
STATEFUL = {
    **OPTIMIZERS,
    "sgd_schedule": lambda: gbopt.sgd(_schedule),
    "adam_schedule": lambda: gbopt.adam(_schedule),
    "trace_nesterov": lambda: gbopt.trace(0.9, nesterov=True),
    "ema_debias": lambda: gbopt.ema(0.9, debias=True),
    "accumulate_square": lambda: gbopt.accumulate_square(),
    "add_decayed_weights": lambda: gbopt.add_decayed_weights(1e-2),
    "chain": lambda: gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.trace(0.9)),
    "divide": lambda: gbopt.divide(
        gbopt.identity(), gbopt.chain(gbopt.accumulate_square(), gbopt.sqrt(), gbopt.add(1.0))
    ),
    "with_step_count": lambda: gbopt.with_step_count(
        lambda t: gbopt.chain(gbopt.ema(0.9), gbopt.bias_correction(0.9, step=t))
    ),
    "skip_nonfinite": lambda: gbopt.skip_nonfinite(gbopt.adam(1e-2)),
    "adamw_chain": lambda: gbopt.chain(gbopt.add_decayed_weights(1e-4), gbopt.adam(1e-3)),
    "rmsprop_centered_momentum": lambda: gbopt.rmsprop(1e-2, centered=True, momentum=0.9),
    "adagrad_optax_rule": lambda: gbopt.adagrad(
        1e-2, initial_accumulator_value=0.1, eps_in_sqrt=True
    ),
    "masked": lambda: gbopt.masked(gbopt.adam(1e-2), lambda p: jax.tree.map(_is_matrix, p)),
    "multi_transform": lambda: gbopt.multi_transform(
        {"matrix": gbopt.adam(1e-2), "other": gbopt.sgd(0.1)},
        lambda p: jax.tree.map(lambda x: "matrix" if _is_matrix(x) else "other", p),
    ),
    "freeze": lambda: gbopt.chain(
        gbopt.freeze(lambda p: jax.tree.map(lambda x: jnp.ndim(x) == 0, p)), gbopt.adam(1e-2)
    ),
    "inject_hyperparams": lambda: gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-2),
    "pytorch.SGD": lambda: gbopt.pytorch.SGD(
        lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2
    ),
    "pytorch.Adagrad": lambda: gbopt.pytorch.Adagrad(lr=1e-2, lr_decay=1e-3),
    "pytorch.RMSprop": lambda: gbopt.pytorch.RMSprop(lr=1e-2, momentum=0.9, centered=True),
    "pytorch.Adam": lambda: gbopt.pytorch.Adam(lr=1e-3, amsgrad=True),
    "pytorch.AdamW": lambda: gbopt.pytorch.AdamW(lr=1e-3),
    "pytorch.NAdam": lambda: gbopt.pytorch.NAdam(lr=1e-3),
    "pytorch.Adamax": lambda: gbopt.pytorch.Adamax(lr=1e-3),
}

# Stateless primitives (no reference tree to check against) take part in the edge-case
# tree tests below.
STATELESS = {
    "identity": lambda: gbopt.identity(),
    "scale": lambda: gbopt.scale(-0.5),
    "add": lambda: gbopt.add(1.0),
    "sqrt": lambda: gbopt.sqrt(),
    "bias_correction": lambda: gbopt.bias_correction(0.9),
    "clip_by_global_norm": lambda: gbopt.clip_by_global_norm(0.5),
    "empty_chain": lambda: gbopt.chain(),
}


@functools.cache
def _params():
    # Cached: arrays are immutable and building them is most of an eager test's time.
    return {
        "dense": {"b": jnp.zeros(2), "w": jnp.ones((3, 2))},
        "frozen": None,
        "out": [jnp.ones(2), jnp.ones(())],
    }


@functools.cache
def _grads():
    return jax.tree.map(lambda p: jnp.full_like(p, 0.5), _params())


def _without(tree, key):
    return {k: v for k, v in tree.items() if k != key}


# (name, gradients, the start of the message). Each gradient differs from _params() in
# one place.
MISMATCHES = [
    (
        "missing key",
        lambda g: {**g, "dense": _without(g["dense"], "b")},
        r"updates\['dense'\]\['b'\] is missing \(the .* has an array of shape \(2,\) there\)",
    ),
    (
        "extra key",
        lambda g: {**g, "dense": {**g["dense"], "c": jnp.ones(2)}},
        r"updates\['dense'\]\['c'\] is not in the",
    ),
    (
        "None for an array",
        lambda g: {**g, "dense": {**g["dense"], "b": None}},
        r"updates\['dense'\]\['b'\] is None but the .* has an array of shape \(2,\) there",
    ),
    (
        "array for None",
        lambda g: {**g, "frozen": jnp.ones(2)},
        r"updates\['frozen'\] is an array of shape \(2,\) but the .* has None there",
    ),
    (
        "tuple for a list",
        lambda g: {**g, "out": tuple(g["out"])},
        r"updates\['out'\] is a tuple of length 2 but the .* has a list of length 2 there",
    ),
    (
        "shorter list",
        lambda g: {**g, "out": g["out"][:1]},
        r"updates\['out'\]\[1\] is missing",
    ),
    (
        "longer list",
        lambda g: {**g, "out": [*g["out"], jnp.ones(3)]},
        r"updates\['out'\]\[2\] is not in the",
    ),
    (
        "array for a dict",
        lambda g: {**g, "dense": jnp.ones(3)},
        r"updates\['dense'\] is an array of shape \(3,\) but the .* has a dict with keys "
        r"\['b', 'w'\] there",
    ),
    (
        "list for the whole dict",
        lambda g: list(g.values()),
        r"updates is a list of length 3 but the .* has a dict with keys",
    ),
    (
        "broadcasting leading axis",
        lambda g: {**g, "dense": {**g["dense"], "w": jnp.ones((4, 3, 2))}},
        r"updates\['dense'\]\['w'\] has shape \(4, 3, 2\) but the .* there has shape \(3, 2\)",
    ),
    (
        "broadcasting unit axis",
        lambda g: {**g, "dense": {**g["dense"], "w": jnp.ones((1, 2))}},
        r"updates\['dense'\]\['w'\] has shape \(1, 2\) but the .* there has shape \(3, 2\)",
    ),
    (
        "broadcasting scalar",
        lambda g: {**g, "dense": {**g["dense"], "b": jnp.ones(())}},
        r"updates\['dense'\]\['b'\] has shape \(\) but the .* there has shape \(2,\)",
    ),
    (
        "transposed",
        lambda g: {**g, "dense": {**g["dense"], "w": jnp.ones((2, 3))}},
        r"updates\['dense'\]\['w'\] has shape \(2, 3\) but the .* there has shape \(3, 2\)",
    ),
    (
        "scalar gets an axis",
        lambda g: {**g, "out": [g["out"][0], jnp.ones((1,))]},
        r"updates\['out'\]\[1\] has shape \(1,\) but the .* there has shape \(\)",
    ),
]


def _mutate(name):
    """The gradients of the MISMATCHES row ``name``."""
    return {m[0]: m[1] for m in MISMATCHES}[name](_grads())


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "mutate, message", [m[1:] for m in MISMATCHES], ids=[m[0] for m in MISMATCHES]
)
@pytest.mark.parametrize("name", STATEFUL)
def test_mismatched_gradients_raise_naming_the_first_path(name, mutate, message, jit):
    tx = STATEFUL[name]()
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(ValueError, match=message):
        update(mutate(_grads()), state, params)


def test_first_mismatch_is_reported_in_flattening_order():
    tx = gbopt.adam(1e-3)
    params = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}, "d": jnp.ones(4)}
    grads = {"a": jnp.ones(2), "b": {"c": jnp.ones(5)}, "d": jnp.ones(6)}
    with pytest.raises(ValueError, match=r"^updates\['b'\]\['c'\] has shape \(5,\)"):
        tx.update(grads, tx.init(params), params)


class Dense(NamedTuple):
    w: jax.Array
    b: jax.Array


def test_mismatch_names_attribute_paths_of_custom_nodes():
    params = {"layer": Dense(jnp.ones((2, 2)), jnp.zeros(2))}
    tx = gbopt.momentum(0.1)
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"^updates\['layer'\]\.w has shape \(2,\) but"):
        tx.update({"layer": Dense(jnp.ones(2), jnp.zeros(2))}, state, params)
    with pytest.raises(
        ValueError, match=r"^updates\['layer'\] is a tuple of length 2 but the .* a Dense"
    ):
        tx.update({"layer": (jnp.ones((2, 2)), jnp.zeros(2))}, state, params)
    with pytest.raises(ValueError, match=r"^updates\['layer'\] is a float leaf but the .* a Dense"):
        tx.update({"layer": 1.0}, state, params)


def test_error_message_says_how_to_fix_it():
    tx = gbopt.adam(1e-3)
    params = _params()
    with pytest.raises(ValueError, match=r"call `init` again for new parameters"):
        tx.update({**_grads(), "extra": jnp.ones(1)}, tx.init(params), params)


def test_apply_updates_refuses_mismatched_updates_and_accepts_none():
    params = _params()
    with pytest.raises(ValueError, match=r"updates\['dense'\]\['w'\] has shape \(4, 3, 2\)"):
        gbopt.apply_updates(params, _mutate("broadcasting leading axis"))
    with pytest.raises(ValueError, match=r"updates\['dense'\]\['c'\] is not in the params"):
        gbopt.apply_updates(params, _mutate("extra key"))
    # None in the updates leaves that parameter as it is.
    updates = {**_grads(), "dense": {**_grads()["dense"], "w": None}}
    new = gbopt.apply_updates(params, updates)
    assert new["dense"]["w"] is params["dense"]["w"]
    np.testing.assert_array_equal(new["dense"]["b"], 0.5)


BAD_STATES = [
    (
        "chain",
        lambda: gbopt.chain(gbopt.trace(0.9), gbopt.ema(0.9)),
        lambda s: s[:1],
        r"chain of 2 transforms got a state that is not a tuple of 2",
    ),
    (
        "chain",
        lambda: gbopt.chain(gbopt.trace(0.9)),
        lambda s: s[0],
        r"chain of 1 transforms got a state .*\(TraceState\)",
    ),
    (
        "divide",
        lambda: gbopt.divide(gbopt.identity(), gbopt.identity()),
        tuple,
        r"divide got a state of type tuple, not the DivideState",
    ),
    (
        "with_step_count",
        lambda: gbopt.with_step_count(lambda t: gbopt.ema(0.9)),
        lambda s: s.inner_state,
        r"with_step_count got a state of type EmaState, not the StepCountState",
    ),
    (
        "skip_nonfinite",
        lambda: gbopt.skip_nonfinite(gbopt.sgd(0.1)),
        lambda s: s.inner_state,
        r"skip_nonfinite got a state of type tuple, not the SkipNonfiniteState",
    ),
    (
        "masked",
        lambda: gbopt.masked(gbopt.sgd(0.1), True),
        lambda s: s.inner_state,
        r"masked got a state of type tuple, not the MaskedState",
    ),
    (
        "adam given momentum's state",
        lambda: gbopt.adam(0.1),
        lambda s: gbopt.momentum(0.1).init(_params()),
        r"with_step_count got a state of type tuple",
    ),
]


@pytest.mark.parametrize(
    "make, corrupt, message", [b[1:] for b in BAD_STATES], ids=[b[0] for b in BAD_STATES]
)
def test_combinators_refuse_a_state_they_did_not_build(make, corrupt, message):
    tx = make()
    params = _params()
    state = corrupt(tx.init(params))
    with pytest.raises(ValueError, match=message):
        tx.update(_grads(), state, params)
    with pytest.raises(ValueError, match=message):
        jax.jit(tx.update)(_grads(), state, params)


# --- point 4: integer and boolean parameters ---------------------------------------------

NON_FLOAT_PARAMS = [
    (
        {"w": jnp.ones(2), "emb": {"ids": jnp.asarray([3, -2, 5])}},
        r"params\['emb'\]\['ids'\] has dtype int32",
    ),
    ({"w": jnp.ones(2), "mask": jnp.asarray([True, False])}, r"params\['mask'\] has dtype bool"),
    (
        {"layers": [jnp.ones(2), jnp.zeros(3, jnp.uint8)]},
        r"params\['layers'\]\[1\] has dtype uint8",
    ),
    ({"n": 3}, r"params\['n'\] has dtype int32"),
    (jnp.arange(3), r"^params has dtype int32"),
]


@pytest.mark.parametrize("params, message", NON_FLOAT_PARAMS, ids=range(len(NON_FLOAT_PARAMS)))
# (`masked` hands its transform only the selected parameters: the others may be anything.)
@pytest.mark.parametrize("name", [n for n in STATEFUL if n != "masked"])
def test_integer_or_boolean_params_raise_at_init_naming_the_path(name, params, message):
    with pytest.raises(TypeError, match=message + r".*need floating-point parameters"):
        STATEFUL[name]().init(params)


def test_apply_updates_refuses_integer_params_that_receive_an_update():
    params = {"w": jnp.asarray([3, -2, 5]), "x": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int32"):
        gbopt.apply_updates(params, {"w": jnp.full(3, 1e-3), "x": jnp.ones(2)})
    # An integer leaf with a None update is left alone (e.g. a step counter in the tree).
    new = gbopt.apply_updates(params, {"w": None, "x": jnp.ones(2)})
    np.testing.assert_array_equal(new["w"], [3, -2, 5])
    assert new["w"].dtype == jnp.int32


# --- point 8: edge-case trees ------------------------------------------------------------

EDGE_TREES = {
    "empty dict": {},
    "empty tuple": (),
    "empty list": [],
    "None": None,
    "nested empty": {"a": {}, "b": ((), [{}]), "c": [None]},
    "kitchen sink": {
        "empty": {},
        "unit": (),
        "zero_size": jnp.zeros((0, 3)),
        "scalar": jnp.asarray(2.0),
        "python_scalar": 2.0,
        "none": None,
        "deep": [None, ({}, jnp.full((2,), 3.0))],
    },
}


def _check_step(tx, params, grads, update):
    state = tx.init(params)
    updates, new_state = update(grads, state, params)
    assert jax.tree.structure(updates) == jax.tree.structure(grads)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        assert jnp.shape(u) == jnp.shape(g)
        assert bool(jnp.all(jnp.isfinite(u)))
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    new_params = gbopt.apply_updates(params, updates)
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
    # A second step from the new state (the state round-trips).
    updates2, _ = update(grads, new_state, new_params)
    assert jax.tree.structure(updates2) == jax.tree.structure(grads)
    return updates, updates2


@pytest.mark.parametrize("tree", EDGE_TREES)
@pytest.mark.parametrize("name", [*STATEFUL, *STATELESS])
def test_edge_case_trees_work_eagerly_and_under_jit(name, tree):
    tx = {**STATEFUL, **STATELESS}[name]()
    params = EDGE_TREES[tree]
    # Positive gradients (so that `sqrt` stays real); Python scalars stay Python scalars.
    grads = jax.tree.map(lambda p: p * 0 + 0.5, params)
    eager = _check_step(tx, params, grads, tx.update)
    jitted = _check_step(tx, params, grads, jax.jit(tx.update))
    for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(np.asarray(e), np.asarray(j), rtol=1e-6)


def test_scalar_leaf_steps_like_a_one_element_vector():
    tx = gbopt.adam(0.1)
    scalar = {"s": jnp.asarray(2.0)}
    vector = {"s": jnp.asarray([2.0])}
    u_s, _ = tx.update({"s": jnp.asarray(0.3)}, tx.init(scalar), scalar)
    u_v, _ = tx.update({"s": jnp.asarray([0.3])}, tx.init(vector), vector)
    assert u_s["s"].shape == ()
    np.testing.assert_array_equal(u_s["s"], u_v["s"][0])


# --- point 9: transforms that need params --------------------------------------------------

NEEDS_PARAMS = {
    "add_decayed_weights": lambda: gbopt.add_decayed_weights(1e-2),
    "masked add_decayed_weights": lambda: gbopt.add_decayed_weights(
        1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "in a chain": lambda: gbopt.chain(gbopt.add_decayed_weights(1e-4), gbopt.adam(1e-3)),
    "in optax.chain": lambda: optax.chain(gbopt.add_decayed_weights(1e-4), gbopt.sgd(1e-3)),
    "in skip_nonfinite": lambda: gbopt.skip_nonfinite(gbopt.add_decayed_weights(1e-4)),
    "in divide": lambda: gbopt.divide(gbopt.identity(), gbopt.add_decayed_weights(1.0)),
    "in masked": lambda: gbopt.masked(gbopt.add_decayed_weights(1e-4), True),
    "pytorch.AdamW": lambda: gbopt.pytorch.AdamW(lr=1e-3, weight_decay=1e-2),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", NEEDS_PARAMS)
def test_missing_params_raise_naming_the_transform_and_params(name, jit):
    tx = NEEDS_PARAMS[name]()
    params = _params()
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    with pytest.raises(ValueError, match=r"`weight_decay` needs the parameters.*`params`"):
        update(_grads(), state)
    with pytest.raises(ValueError, match=r"`weight_decay` needs the parameters.*`params`"):
        update(_grads(), state, None)


def test_mask_that_does_not_match_the_params_raises_naming_the_path():
    params = _params()
    mask = {"dense": {"w": True}, "frozen": None, "out": [False, False]}
    tx = gbopt.add_decayed_weights(1e-2, mask=mask)
    with pytest.raises(ValueError, match=r"mask\['dense'\]\['b'\] is missing"):
        tx.update(_grads(), tx.init(params), params)
