"""``gbopt.skip_nonfinite``: a bad step is skipped, never applied (issue 6, point 5)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS

import gbopt

BAD = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}


def _params(dtype=jnp.float32):
    return {
        "dense": {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25]], dtype), "b": jnp.zeros(2, dtype)},
        "scale": jnp.asarray(1.5, dtype),
    }


def _grads(seed, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), dtype), _params(dtype))


def _poison(grads, value, where="w"):
    """``grads`` with one element of one leaf set to ``value``."""
    if where == "scale":
        return {**grads, "scale": jnp.asarray(value, grads["scale"].dtype)}
    w = grads["dense"]["w"].at[1, 0].set(value)
    return {**grads, "dense": {**grads["dense"], "w": w}}


def _bitwise_equal(a, b):
    """Same structure, dtypes, shapes and bytes (NaN payloads and the sign of 0 included)."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _all_zero(tree):
    return all(np.all(np.asarray(x, np.float32) == 0) for x in jax.tree.leaves(tree))


@functools.cache
def _compiled(name):
    """(inner, wrapped, jitted inner update, jitted wrapped update), compiled once per test run."""
    inner = OPTIMIZERS[name]()
    tx = gbopt.skip_nonfinite(inner)
    return inner, tx, jax.jit(inner.update), jax.jit(tx.update)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bad_gradient_gives_zero_updates_and_keeps_state_bitwise(name):
    _, tx, _, step = _compiled(name)
    params = _params()
    state = tx.init(params)
    # A few good steps first, so that the state holds more than zeros.
    for seed in range(2):
        _, state = step(_grads(seed), state, params)
    for bad, where in itertools.product(BAD.values(), ["w", "scale"]):
        updates, new_state = step(_poison(_grads(5), bad, where), state, params)
        assert _all_zero(updates)
        _bitwise_equal(new_state.inner_state, state.inner_state)
        assert int(new_state.total_skipped) == int(state.total_skipped) + 1
        assert int(new_state.consecutive_skipped) == int(state.consecutive_skipped) + 1
        _bitwise_equal(gbopt.apply_updates(params, updates), params)
        state = new_state
    assert int(state.total_skipped) == 6


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_skipping_steps_equals_leaving_them_out(name):
    """Good and bad steps interleaved give, bitwise, the run on the good steps alone."""
    inner, tx, inner_step, step = _compiled(name)
    params = _params()
    pattern = [True, False, True, False, False, False, True, True, False]
    grads = [
        _grads(i) if good else _poison(_grads(i), list(BAD.values())[i % 3])
        for i, good in enumerate(pattern)
    ]

    def run(gradients):
        state, p, history = tx.init(params), params, []
        for g in gradients:
            u, state = step(g, state, p)
            p = gbopt.apply_updates(p, u)
            history.append((u, state))
        return p, history

    p, history = run(grads)
    p_good, history_good = run([g for good, g in zip(pattern, grads, strict=True) if good])
    _bitwise_equal(p, p_good)
    good_steps = iter(history_good)
    consecutive = 0
    for good, (u, state) in zip(pattern, history, strict=True):
        if good:
            u_good, state_good = next(good_steps)
            _bitwise_equal(u, u_good)
            _bitwise_equal(state.inner_state, state_good.inner_state)
        else:
            assert _all_zero(u)
        consecutive = 0 if good else consecutive + 1
        assert int(state.consecutive_skipped) == consecutive
    assert int(state.total_skipped) == pattern.count(False)

    # And the good steps are the inner transform's (another program, so to rounding).
    inner_state, p_inner = inner.init(params), params
    for g in (g for good, g in zip(pattern, grads, strict=True) if good):
        u_inner, inner_state = inner_step(g, inner_state, p_inner)
        p_inner = gbopt.apply_updates(p_inner, u_inner)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p_inner), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_any_number_of_consecutive_bad_steps_is_skipped():
    # optax.apply_if_finite applies the bad step after `max_consecutive_errors`; gbopt never.
    tx = gbopt.skip_nonfinite(gbopt.adam(1e-2))
    params = _params()
    state = tx.init(params)
    _, state = tx.update(_grads(0), state, params)
    before = state.inner_state

    def body(state, g):
        u, state = tx.update(g, state, params)
        return state, u

    bad = jax.tree.map(lambda g: jnp.stack([g] * 50), _poison(_grads(1), np.nan))
    state, updates = jax.jit(lambda s, g: jax.lax.scan(body, s, g))(state, bad)
    assert _all_zero(updates)
    _bitwise_equal(state.inner_state, before)
    assert int(state.total_skipped) == int(state.consecutive_skipped) == 50


def test_inner_faults_are_caught_with_check_outputs():
    # The gradients are finite; the inner transform produces the NaN or Inf.
    params = {"w": jnp.asarray([1.0, 2.0, 3.0])}
    cases = [
        # RMSProp with eps = 0 on a zero gradient: 0 / sqrt(0) = NaN in the updates.
        (gbopt.rmsprop(0.1, eps=0.0), {"w": jnp.asarray([0.0, 1.0, 2.0])}),
        # Adam with eps = 0: the same 0 / 0.
        (gbopt.adam(0.1, eps=0.0), {"w": jnp.asarray([1.0, 0.0, 1.0])}),
        # AdaGrad: a finite gradient whose square overflows float32 (Inf in the state).
        (gbopt.adagrad(0.1), {"w": jnp.asarray([1.0, 3e38, 1.0])}),
        # An optax inner transform: the same overflow in its second moment.
        (optax.adam(0.1), {"w": jnp.asarray([1.0, 3e38, 1.0])}),
    ]
    for inner, grads in cases:
        raw_updates, raw_state = inner.update(grads, inner.init(params), params)
        assert not bool(gbopt._safety._all_finite((raw_updates, raw_state)))
        tx = gbopt.skip_nonfinite(inner, check_outputs=True)
        state = tx.init(params)
        updates, new_state = tx.update(grads, state, params)
        assert _all_zero(updates)
        _bitwise_equal(new_state.inner_state, state.inner_state)
        assert int(new_state.total_skipped) == 1
        # The default checks the gradients (finite here) and applies the step.
        tx = gbopt.skip_nonfinite(inner)
        state = tx.init(params)
        updates, new_state = tx.update(grads, state, params)
        assert int(new_state.total_skipped) == 0
        _bitwise_equal(new_state.inner_state, raw_state)


@pytest.mark.parametrize("check_outputs", [False, True])
def test_a_nan_gradient_on_a_frozen_group_does_not_block_the_trainable_ones(check_outputs):
    params = {"frozen": jnp.ones(3), "trained": {"w": jnp.ones(2), "b": jnp.ones(1)}}
    labels = {"frozen": "frozen", "trained": {"w": "train", "b": "train"}}
    grads = {
        "frozen": jnp.asarray([jnp.nan, 1.0, jnp.inf]),
        "trained": {"w": jnp.ones(2), "b": jnp.ones(1)},
    }
    for inner in (
        gbopt.multi_transform({"train": gbopt.adam(0.1), "frozen": gbopt.set_to_zero()}, labels),
        gbopt.chain(
            gbopt.freeze({"frozen": True, "trained": {"w": False, "b": False}}), gbopt.sgd(0.1)
        ),
    ):
        tx = gbopt.skip_nonfinite(inner, check_outputs=check_outputs)
        state = tx.init(params)
        updates, state = jax.jit(tx.update)(grads, state, params)
        assert int(state.total_skipped) == 0
        assert _all_zero(updates["frozen"])
        assert not _all_zero(updates["trained"])
        # A NaN on a trainable leaf still skips the whole step, state bitwise unchanged.
        bad = {**grads, "trained": {"w": jnp.asarray([1.0, jnp.nan]), "b": jnp.ones(1)}}
        new_updates, new_state = jax.jit(tx.update)(bad, state, params)
        assert int(new_state.total_skipped) == 1 and _all_zero(new_updates)
        _bitwise_equal(new_state.inner_state, state.inner_state)


def test_good_steps_are_the_inner_transform():
    for name in ("sgd", "adam"):
        inner, tx, inner_step, step = _compiled(name)
        params = _params()
        u, s = step(_grads(3), tx.init(params), params)
        u_inner, s_inner = inner_step(_grads(3), inner.init(params), params)
        # (Bit for bit too: test_good_steps_equal_the_inner_compiled_step_bitwise.)
        ours, theirs = jax.tree.leaves((u, s.inner_state)), jax.tree.leaves((u_inner, s_inner))
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        assert int(s.total_skipped) == int(s.consecutive_skipped) == 0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_updates_keep_their_dtype(dtype):
    tx = gbopt.skip_nonfinite(gbopt.adam(1e-2))
    params = _params(dtype)
    state = tx.init(params)
    good, state_good = tx.update(_grads(0, dtype), state, params)
    bad, state_bad = tx.update(_poison(_grads(0, dtype), np.inf), state, params)
    for u in jax.tree.leaves((good, bad)):
        assert u.dtype == dtype
    assert _all_zero(bad)
    _bitwise_equal(state_bad.inner_state, state.inner_state)


def test_vmap_skips_each_batch_member_on_its_own():
    tx = gbopt.skip_nonfinite(gbopt.momentum(0.1))
    params = _params()
    state = tx.init(params)
    batch = [_grads(0), _poison(_grads(1), np.nan), _grads(2)]
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *batch)
    updates, states = jax.vmap(tx.update, in_axes=(0, None, None))(stacked, state, params)
    np.testing.assert_array_equal(states.total_skipped, [0, 1, 0])
    for i, g in enumerate(batch):
        u_i, s_i = tx.update(g, state, params)
        _bitwise_equal(jax.tree.map(lambda x, i=i: x[i], updates), u_i)
        _bitwise_equal(jax.tree.map(lambda x, i=i: x[i], states), s_i)
    assert _all_zero(jax.tree.map(lambda x: x[1], updates))


def test_skip_counters_saturate():
    tx = gbopt.skip_nonfinite(gbopt.sgd(0.1))
    params = _params()
    limit = np.iinfo(np.int32).max
    state = tx.init(params)._replace(
        total_skipped=jnp.int32(limit), consecutive_skipped=jnp.int32(limit - 1)
    )
    for _ in range(2):
        _, state = tx.update(_poison(_grads(0), np.nan), state, params)
        assert int(state.total_skipped) == limit
        assert int(state.consecutive_skipped) == limit
    _, state = tx.update(_grads(0), state, params)
    assert int(state.total_skipped) == limit
    assert int(state.consecutive_skipped) == 0


def test_works_inside_optax_chain_and_on_edge_trees():
    tx = optax.chain(optax.clip_by_global_norm(1.0), gbopt.skip_nonfinite(gbopt.adam(1e-2)))
    params = _params()
    state = tx.init(params)
    updates, new_state = tx.update(_poison(_grads(0), np.nan), state, params)
    assert _all_zero(updates)
    _bitwise_equal(new_state[1].inner_state, state[1].inner_state)
    for tree in ({}, None, {"a": jnp.zeros((0, 2)), "b": None}):
        tx = gbopt.skip_nonfinite(gbopt.adam(1e-2))
        updates, s = jax.jit(tx.update)(tree, tx.init(tree), tree)
        assert jax.tree.structure(updates) == jax.tree.structure(tree)
        assert int(s.total_skipped) == 0


def test_state_is_a_named_tuple_with_counters_first():
    state = gbopt.skip_nonfinite(gbopt.sgd(0.1)).init(_params())
    assert isinstance(state, gbopt.SkipNonfiniteState)
    assert state._fields == ("total_skipped", "consecutive_skipped", "inner_state")
    assert state.total_skipped.dtype == jnp.int32


def test_state_can_be_donated():
    # Every leaf of the state is its own buffer, so a step may donate it.
    tx = gbopt.skip_nonfinite(gbopt.adam(1e-2))
    params = _params()

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    params, state = step(params, tx.init(params), _grads(0))
    params, state = step(params, state, _poison(_grads(1), np.nan))
    assert int(state.total_skipped) == 1


def _passing_through():
    """An inner transform whose state repeats, passes through or ignores what it computes.

    State: (the gradient itself, a running sum returned twice, the old value passed
    through, a constant, the updates themselves). `skip_nonfinite` selects a state array
    where it is computed when it can, and on the way out otherwise: every kind here.
    """

    def init(params):
        z = jax.tree.map(jnp.zeros_like, params)
        return (z, z, z, jnp.float32(1.0), z, jax.tree.map(jnp.ones_like, params))

    def update(updates, state, params=None):
        del params
        last, total, _, const, _, kept = state
        total = jax.tree.map(lambda s, g: s + g, total, updates)
        out = jax.tree.map(lambda t, g: 0.5 * t + g, total, updates)
        return out, (updates, total, total, const, out, kept)

    return gbopt.GradientTransformation(init, update)


@pytest.mark.parametrize("check_outputs", [False, True])
def test_state_arrays_passed_through_or_repeated_are_kept_or_skipped(check_outputs):
    inner = _passing_through()
    tx = gbopt.skip_nonfinite(inner, check_outputs=check_outputs)
    params = _params()
    step, inner_step = jax.jit(tx.update), jax.jit(inner.update)
    state, inner_state = tx.init(params), inner.init(params)
    for seed in range(3):
        u, state = step(_grads(seed), state, params)
        u_inner, inner_state = inner_step(_grads(seed), inner_state, params)
        _bitwise_equal(u, u_inner)
        _bitwise_equal(state.inner_state, inner_state)
    for bad in BAD.values():
        u, new_state = step(_poison(_grads(7), bad), state, params)
        assert _all_zero(u)
        _bitwise_equal(new_state.inner_state, state.inner_state)
        assert int(new_state.consecutive_skipped) == int(state.consecutive_skipped) + 1
        state = new_state


@pytest.mark.parametrize("check_outputs", [False, True])
def test_good_steps_equal_the_inner_compiled_step_bitwise(check_outputs):
    # The wrapper's program computes the same values as the inner transform's own
    # compiled step, jitted (inlined in the caller's program) or called op by op.
    for name in ("sgd", "momentum", "adam", "adamw", "rmsprop", "lamb"):
        inner = OPTIMIZERS[name]() if name in OPTIMIZERS else getattr(gbopt, name)(1e-2)
        tx = gbopt.skip_nonfinite(inner, check_outputs=check_outputs)
        params = _params()
        inner_step = jax.jit(inner.update)
        for update in (jax.jit(tx.update), tx.update):
            state, inner_state = tx.init(params), inner.init(params)
            for seed in range(2):
                u, state = update(_grads(seed), state, params)
                u_inner, inner_state = inner_step(_grads(seed), inner_state, params)
                _bitwise_equal(u, u_inner)
                _bitwise_equal(state.inner_state, inner_state)


def test_without_jax_internals_the_outputs_are_selected_the_same(monkeypatch):
    # `_replay` reads the jaxpr with JAX's internal names; where they are missing it
    # falls back to `jax.core.eval_jaxpr` and selects the outputs only (slower, same bits).
    tx = gbopt.skip_nonfinite(gbopt.adam(1e-2))
    params = _params()
    good, bad = _grads(0), _poison(_grads(1), np.nan)
    state = tx.init(params)
    expected = [jax.jit(tx.update)(g, state, params) for g in (good, bad)]
    monkeypatch.delattr(jax.extend.core, "Literal")
    for g, (u_ref, s_ref) in zip((good, bad), expected, strict=True):
        u, s = jax.jit(tx.update)(g, state, params)
        _bitwise_equal(u, u_ref)
        _bitwise_equal(s, s_ref)
    assert int(s.total_skipped) == 1


def test_an_inner_state_that_changes_structure_is_refused():
    def update(updates, state, params=None):
        return updates, {"count": state["count"] + 1, "extra": jnp.zeros(())}

    tx = gbopt.skip_nonfinite(
        gbopt.GradientTransformation(lambda p: {"count": jnp.zeros((), jnp.int32)}, update)
    )
    with pytest.raises(TypeError, match=r"skip_nonfinite needs an `inner` transform whose"):
        tx.update(_grads(0), tx.init(_params()), _params())

    def recast(updates, state, params=None):
        return updates, {"count": state["count"].astype(jnp.float32)}

    tx = gbopt.skip_nonfinite(
        gbopt.GradientTransformation(lambda p: {"count": jnp.zeros((), jnp.int32)}, recast)
    )
    with pytest.raises(TypeError, match=r"inner_state\['count'\] was int32\[\] and came back"):
        tx.update(_grads(0), tx.init(_params()), _params())


@pytest.mark.parametrize("check_outputs", [False, True])
def test_donated_step_updates_the_state_in_place(check_outputs):
    # What XLA compiles: no copy of a donated buffer, and no temporary as large as a
    # parameter (a `lax.cond` around the step kept the updates in memory: one of each).
    tx = gbopt.skip_nonfinite(gbopt.adam(1e-3), check_outputs=check_outputs)
    params = {"w": jnp.zeros((256, 256)), "b": jnp.zeros(256)}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params)
    compiled = compiled.compile()
    text = compiled.as_text()
    assert " copy(" not in text[text.find("ENTRY") :]
    assert compiled.memory_analysis().temp_size_in_bytes < params["w"].nbytes
