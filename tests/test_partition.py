"""Parameter groups: multi_transform, masked, freeze, set_to_zero, label_by_path."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt


def _params():
    rng = np.random.default_rng(1)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        },
        "out": {
            "kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
        },
    }


def _grads(params, k):
    return jax.tree.map(lambda p: jnp.cos(p * (k + 2)), params)


BIAS_LABELS = gbopt.label_by_path(lambda path, leaf: "bias" if path[-1] == "bias" else "kernel")


def test_each_group_equals_its_own_optimizer_bitwise():
    # Fed the same gradients, the bias updates are those of Adam(1e-2) and the kernel
    # updates those of Adam(1e-3), bit for bit.
    tx = gbopt.multi_transform({"kernel": gbopt.adam(1e-3), "bias": gbopt.adam(1e-2)}, BIAS_LABELS)
    small, large = gbopt.adam(1e-3), gbopt.adam(1e-2)
    params = _params()
    state, s_small, s_large = tx.init(params), small.init(params), large.init(params)
    for k in range(5):
        g = _grads(params, k)
        updates, state = tx.update(g, state, params)
        u_small, s_small = small.update(g, s_small, params)
        u_large, s_large = large.update(g, s_large, params)
        for layer in ("dense", "out"):
            np.testing.assert_array_equal(updates[layer]["bias"], u_large[layer]["bias"])
            np.testing.assert_array_equal(updates[layer]["kernel"], u_small[layer]["kernel"])
        params = gbopt.apply_updates(params, updates)


def test_each_transform_keeps_state_for_its_own_parameters_only():
    tx = gbopt.multi_transform(
        {"kernel": gbopt.momentum(0.1), "bias": gbopt.sgd(0.1), "unused": gbopt.adam(0.1)},
        BIAS_LABELS,
    )
    state = tx.init(_params())
    assert isinstance(state, gbopt.MultiTransformState)
    assert sorted(state.inner_states) == ["bias", "kernel", "unused"]
    trace = state.inner_states["kernel"][1].trace
    assert trace["dense"]["bias"] == gbopt.MaskedNode()
    assert trace["dense"]["kernel"].shape == (3, 4)
    assert jax.tree.leaves(state.inner_states["bias"]) == []  # sgd keeps nothing
    # A label without parameters: a state with no arrays but its step count.
    assert [x.shape for x in jax.tree.leaves(state.inner_states["unused"])] == [()]


def test_labels_as_a_tree_a_prefix_or_a_function_agree():
    params = _params()
    txs = {"a": gbopt.sgd(0.1), "b": gbopt.sgd(1.0)}
    full = {"dense": {"kernel": "a", "bias": "a"}, "out": {"kernel": "b", "bias": "b"}}
    prefix = {"dense": "a", "out": "b"}
    g = _grads(params, 0)
    results = [
        gbopt.multi_transform(txs, labels).update(
            g, gbopt.multi_transform(txs, labels).init(params)
        )[0]
        for labels in (
            full,
            prefix,
            lambda p: prefix,
            gbopt.label_by_path(lambda path, _: "a" if path[0] == "dense" else "b"),
        )
    ]
    for r in results[1:]:
        chex.assert_trees_all_equal(r, results[0])
    np.testing.assert_array_equal(results[0]["out"]["bias"], -g["out"]["bias"])
    np.testing.assert_array_equal(
        results[0]["dense"]["bias"], -np.float32(0.1) * g["dense"]["bias"]
    )


def test_label_by_path_gives_plain_keys_for_dicts_tuples_and_namedtuples():
    seen = []

    def rule(path, leaf):
        seen.append(path)
        return "x"

    gbopt.label_by_path(rule)({"a": (jnp.zeros(1), gbopt.TraceState(jnp.zeros(2)))})
    assert seen == [("a", 0), ("a", 1, "trace")]


def test_runs_under_jit_and_passes_extra_args_to_each_group():
    received = []

    def needs_value():
        def update(updates, state, params=None, *, value):
            received.append(value)
            return updates, state

        return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)

    tx = gbopt.multi_transform(
        {"kernel": gbopt.chain(gbopt.sgd(0.1), needs_value()), "bias": needs_value()}, BIAS_LABELS
    )
    params = _params()
    updates, _ = jax.jit(tx.update)(
        _grads(params, 0), tx.init(params), params, value=jnp.float32(3.0)
    )
    assert len(received) == 2
    np.testing.assert_array_equal(updates["out"]["bias"], _grads(params, 0)["out"]["bias"])


def test_multi_transform_errors_name_the_path_and_the_label():
    params = _params()
    tx = gbopt.multi_transform({"kernel": gbopt.sgd(0.1)}, BIAS_LABELS)
    with pytest.raises(
        ValueError,
        match=r"param_labels\['dense'\]\['bias'\] is 'bias', which is not a key of "
        r"`transforms` \(keys: \['kernel'\]\)",
    ):
        tx.init(params)
    with pytest.raises(TypeError, match=r"`transforms` must be a non-empty dict"):
        gbopt.multi_transform([gbopt.sgd(0.1)], BIAS_LABELS)
    with pytest.raises(TypeError, match=r"mutually sortable"):
        gbopt.multi_transform({"a": gbopt.sgd(0.1), 1: gbopt.sgd(0.1)}, BIAS_LABELS)
    with pytest.raises(TypeError, match=r"`transforms\['a'\]` must be a gradient transformation"):
        gbopt.multi_transform({"a": gbopt.sgd}, BIAS_LABELS)
    bad = gbopt.multi_transform({"a": gbopt.sgd(0.1)}, {"dense": "a", "head": "a"})
    with pytest.raises(ValueError, match=r"param_labels\['head'\] is not a path of the parameters"):
        bad.init(params)
    short = gbopt.multi_transform({"a": gbopt.sgd(0.1)}, {"dense": "a"})
    with pytest.raises(
        ValueError, match=r"the parameter at \['out'\]\['bias'\] has no entry in param_labels"
    ):
        short.init(params)
    good = gbopt.multi_transform({"kernel": gbopt.sgd(0.1), "bias": gbopt.sgd(0.1)}, BIAS_LABELS)
    with pytest.raises(
        ValueError, match=r"expects a MultiTransformState with labels \['bias', 'kernel'\]"
    ):
        good.update(params, gbopt.sgd(0.1).init(params), params)


# ---------------------------------------------------------------------------------------
# masked, freeze, set_to_zero.


def test_masked_transforms_selected_leaves_and_passes_the_rest_through():
    params = _params()
    is_matrix = lambda p: jax.tree.map(lambda x: x.ndim == 2, p)  # noqa: E731
    tx = gbopt.masked(gbopt.add_decayed_weights(0.5), is_matrix)
    g = _grads(params, 0)
    updates, state = tx.update(g, tx.init(params), params)
    assert isinstance(state, gbopt.MaskedState)
    np.testing.assert_array_equal(updates["dense"]["bias"], g["dense"]["bias"])
    np.testing.assert_array_equal(
        updates["dense"]["kernel"],
        g["dense"]["kernel"] + np.float32(0.5) * params["dense"]["kernel"],
    )
    # A single bool is a prefix of every tree.
    nothing = gbopt.masked(gbopt.scale(2.0), False)
    chex.assert_trees_all_equal(nothing.update(g, nothing.init(params))[0], g)


def test_masked_state_covers_only_the_selected_leaves():
    tx = gbopt.masked(gbopt.momentum(0.1), {"dense": True, "out": False})
    state = tx.init(_params())
    assert state.inner_state[1].trace["out"] == {
        "kernel": gbopt.MaskedNode(),
        "bias": gbopt.MaskedNode(),
    }


def test_mask_leaves_must_be_bools():
    tx = gbopt.masked(gbopt.sgd(0.1), lambda p: jax.tree.map(lambda x: x.ndim, p))
    with pytest.raises(
        TypeError, match=r"mask\['dense'\]\['bias'\] is int: 1; a mask holds Python bools"
    ):
        tx.init(_params())


def test_freeze_keeps_frozen_parameters_bitwise_and_trains_the_rest():
    params = _params()
    frozen = {"dense": True, "out": False}
    tx = gbopt.chain(gbopt.adam(0.1), gbopt.freeze(frozen))
    state = tx.init(params)
    start = params
    for k in range(3):
        updates, state = tx.update(_grads(params, k), state, params)
        params = gbopt.apply_updates(params, updates)
    chex.assert_trees_all_equal(params["dense"], start["dense"])
    assert not np.array_equal(params["out"]["kernel"], start["out"]["kernel"])


def test_set_to_zero_in_a_multi_transform_freezes_without_state():
    params = _params()
    labels = {"dense": "frozen", "out": "train"}
    tx = gbopt.multi_transform({"train": gbopt.adam(0.1), "frozen": gbopt.set_to_zero()}, labels)
    state = tx.init(params)
    assert jax.tree.leaves(state.inner_states["frozen"]) == []
    adam_nu = gbopt.state_get(state, "nu", group="train")
    assert adam_nu["dense"] == {"kernel": gbopt.MaskedNode(), "bias": gbopt.MaskedNode()}
    updates, _ = tx.update(_grads(params, 0), state, params)
    for leaf in jax.tree.leaves(updates["dense"]):
        np.testing.assert_array_equal(leaf, 0.0)
        assert leaf.dtype == jnp.float32
