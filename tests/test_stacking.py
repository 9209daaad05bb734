"""stack_leaves: the same updates from stacked state, fewer arrays, clear refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gbopt


def _params(dtype=jnp.float32):
    """12 biases of 6 (two groups of 8 and 4), 3 of 5, one of 7 (alone), a scalar
    pair, and one large matrix (above max_leaf_size=64 below)."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {
        "b6": [arr(6) for _ in range(12)],
        "b5": (arr(5), arr(5), arr(5)),
        "b7": arr(7),
        "scalars": {"s0": arr(), "s1": arr()},
        "big": arr(10, 10),
    }


def _grads(params, k):
    return jax.tree.map(lambda p: jnp.sin(p * (k + 1.5)) * (1 + k % 3), params)


def _run(tx, params, steps):
    state = tx.init(params)

    @jax.jit
    def step(params, state, k):
        updates, state = tx.update(_grads(params, k), state, params)
        return gbopt.apply_updates(params, updates), state, updates

    for k in range(steps):
        params, state, updates = step(params, state, k)
    return params, state, updates


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_same_trajectory_as_the_unwrapped_optimizer(name):
    # float64: stacking changes only where the numbers are kept, so 25 steps agree to
    # rounding (XLA may fuse the stacked loops differently: a few ulp, not 1e-6).
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        p_ref, _, u_ref = _run(OPTIMIZERS[name](), params, 25)
        tx = gbopt.stack_leaves(OPTIMIZERS[name](), group_size=8, max_leaf_size=64)
        p_st, _, u_st = _run(tx, params, 25)
        # the trajectory moved: a wrong rule could not pass
        moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), p_ref, params)
    assert min(jax.tree.leaves(moved)) > 1e-4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15), p_st, p_ref)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15), u_st, u_ref)


@pytest.mark.parametrize("name", ["momentum", "rmsprop", "adam"])
def test_float32_first_steps_are_bitwise(name):
    # Later steps drift by a few ulp (Adam: 6 ulp in the parameters after 20 steps):
    # XLA:CPU's loops round differently for arrays of different shapes, as they do for
    # sharded arrays. The float64 test above bounds the drift.
    params = _params()
    _, s_ref, u_ref = _run(OPTIMIZERS[name](), params, 2)
    tx = gbopt.stack_leaves(OPTIMIZERS[name](), group_size=8, max_leaf_size=64)
    _, s_st, u_st = _run(tx, params, 2)
    jax.tree.map(np.testing.assert_array_equal, u_st, u_ref)
    # the state holds the same numbers, stacked
    plan = tx.init(params)
    assert jax.tree.structure(s_st) == jax.tree.structure(plan)
    ref_numbers = np.sort(np.concatenate([np.ravel(x) for x in jax.tree.leaves(s_ref)]))
    st_numbers = np.sort(np.concatenate([np.ravel(x) for x in jax.tree.leaves(s_st)]))
    np.testing.assert_array_equal(st_numbers, ref_numbers)


def test_state_is_stacked_by_shape_dtype_and_group_size():
    params = _params()
    tx = gbopt.stack_leaves(gbopt.momentum(0.1, 0.9), group_size=8, max_leaf_size=64)
    state = tx.init(params)
    assert isinstance(state, gbopt.StackLeavesState)
    trace = state.inner[1].trace
    assert isinstance(trace, gbopt.LeafStacks)
    # groups in the order of the leaves: b5 (3), b6 (8 + 4), scalars (2); b7 alone, big too large
    assert [s.shape for s in trace.stacks] == [(3, 5), (8, 6), (4, 6), (2,)]
    assert [x.shape for x in trace.leaves] == [(7,), (10, 10)]
    # 1 + 5 state arrays instead of 19
    assert len(jax.tree.leaves(state)) == 6
    assert len(jax.tree.leaves(gbopt.momentum(0.1, 0.9).init(params))) == 19


def test_leaves_of_different_dtypes_are_not_stacked_together():
    params = {"a": jnp.zeros(4, jnp.float32), "b": jnp.zeros(4, jnp.bfloat16), "c": jnp.ones(4)}
    state = gbopt.stack_leaves(gbopt.momentum(0.1, 0.9)).init(params)
    trace = state.inner[1].trace
    assert [s.shape for s in trace.stacks] == [(2, 4)]  # a and c
    assert [x.dtype for x in trace.leaves] == [jnp.bfloat16]  # b's momentum follows b


def test_updates_keep_the_parameters_structure_dtypes_and_shapes():
    params = _params()
    tx = gbopt.stack_leaves(gbopt.adam(1e-3))
    updates, _ = jax.jit(tx.update)(_grads(params, 0), tx.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    jax.tree.map(
        lambda u, p: (u.shape, u.dtype) == (p.shape, p.dtype) or pytest.fail(), updates, params
    )


def test_no_params_in_update_uses_the_updates_structure():
    params = _params()
    tx = gbopt.stack_leaves(gbopt.adam(1e-3), group_size=8, max_leaf_size=64)
    state = tx.init(params)
    u1, _ = tx.update(_grads(params, 0), state, params)
    u2, _ = tx.update(_grads(params, 0), state)
    jax.tree.map(np.testing.assert_array_equal, u1, u2)


def test_works_inside_optax_chain_and_with_optax_inside():
    params = _params()
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    ours = optax.chain(
        optax.clip_by_global_norm(1.0), gbopt.stack_leaves(optax.adam(1e-2), max_leaf_size=64)
    )
    p_ref, _, _ = _run(ref, params, 10)
    p_st, _, _ = _run(ours, params, 10)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), p_st, p_ref)


def test_vmap_over_a_batch_of_parameter_trees():
    params = _params()
    batch = jax.tree.map(lambda x: jnp.stack([x, 2 * x, -x]), params)
    tx = gbopt.stack_leaves(gbopt.adam(1e-2), max_leaf_size=64)

    def run(p):
        s = tx.init(p)
        u, s = tx.update(_grads(p, 0), s, p)
        u, s = tx.update(_grads(p, 1), s, p)
        return u

    got = jax.jit(jax.vmap(run))(batch)
    run_one = jax.jit(run)  # compiled once for the three trees
    for i in range(3):
        one = jax.tree.map(lambda x, i=i: x[i], batch)
        expected = run_one(one)
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7),
            got,
            expected,
        )


def test_donated_jitted_step_returns_fewer_arrays():
    params = {f"w{i}": jnp.full((16,), float(i)) for i in range(40)}
    grads = jax.tree.map(jnp.ones_like, params)
    for tx, expected in [
        (gbopt.adam(1e-3), 1 + 80),
        (gbopt.stack_leaves(gbopt.adam(1e-3)), 1 + 2 * 5),
    ]:
        state = tx.init(params)
        step = jax.jit(
            lambda p, s, g, tx=tx: (lambda u, s: (gbopt.apply_updates(p, u), s))(
                *tx.update(g, s, p)
            ),
            donate_argnums=(0, 1),
        )
        p, s = step(jax.tree.map(jnp.copy, params), state, grads)
        assert len(jax.tree.leaves(s)) == expected
        np.testing.assert_allclose(p["w3"], 3 - 1e-3, rtol=1e-6)


def test_inside_multi_transform_branches():
    params = _params()
    labels = {"b6": "a", "b5": "b", "b7": "b", "scalars": "a", "big": "b"}
    wrapped = gbopt.multi_transform(
        {"a": gbopt.stack_leaves(gbopt.adam(1e-2)), "b": gbopt.stack_leaves(gbopt.sgd(1e-1))},
        labels,
    )
    plain = gbopt.multi_transform({"a": gbopt.adam(1e-2), "b": gbopt.sgd(1e-1)}, labels)
    p_st, _, _ = _run(wrapped, params, 5)
    p_ref, _, _ = _run(plain, params, 5)
    jax.tree.map(lambda a, b: np.testing.assert_array_max_ulp(a, b, maxulp=2), p_st, p_ref)


@pytest.mark.parametrize(
    "inner, who",
    [
        (
            gbopt.multi_transform({"a": gbopt.sgd(0.1)}, lambda p: jax.tree.map(lambda _: "a", p)),
            "multi_transform",
        ),
        (gbopt.masked(gbopt.sgd(0.1), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)), "masked"),
        (gbopt.freeze(lambda p: jax.tree.map(lambda x: x.ndim == 0, p)), "masked"),
        (
            gbopt.add_decayed_weights(1e-2, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            "add_decayed_weights",
        ),
    ],
)
def test_structure_dependent_transforms_are_refused_inside(inner, who):
    params = _params()
    tx = gbopt.stack_leaves(gbopt.chain(inner, gbopt.sgd(0.1)))
    with pytest.raises(ValueError, match=rf"{who}.*stack_leaves.*Put stack_leaves inside"):
        state = tx.init(params)
        tx.update(_grads(params, 0), state, params)


def test_weight_decay_without_a_mask_is_fine_inside():
    params = _params()
    ref = gbopt.chain(gbopt.add_decayed_weights(1e-2), gbopt.sgd(0.1))
    p_ref, _, _ = _run(ref, params, 3)
    p_st, _, _ = _run(gbopt.stack_leaves(ref, max_leaf_size=64), params, 3)
    jax.tree.map(lambda a, b: np.testing.assert_array_max_ulp(a, b, maxulp=2), p_st, p_ref)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"group_size": 1}, ValueError, "group_size.*>= 2"),
        ({"group_size": 2.5}, TypeError, "group_size` must be an int .*float: 2.5"),
        ({"group_size": True}, TypeError, "group_size"),
        ({"max_leaf_size": 0}, ValueError, "max_leaf_size.*>= 1"),
        ({"max_leaf_size": "big"}, TypeError, "max_leaf_size"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        gbopt.stack_leaves(gbopt.sgd(0.1), **kwargs)


def test_not_a_transform_is_named():
    with pytest.raises(TypeError, match="`transform`.*gbopt.adam"):
        gbopt.stack_leaves(gbopt.adam)


def test_wrong_state_is_named():
    params = _params()
    tx = gbopt.stack_leaves(gbopt.adam(1e-3))
    with pytest.raises(ValueError, match="stack_leaves.*StackLeavesState"):
        tx.update(_grads(params, 0), gbopt.adam(1e-3).init(params), params)


def test_updates_that_do_not_fit_the_params_are_named():
    params = _params()
    tx = gbopt.stack_leaves(gbopt.adam(1e-3))
    bad = dict(_grads(params, 0), b7=jnp.zeros(8))
    with pytest.raises(ValueError, match=r"\['b7'\]"):
        tx.update(bad, tx.init(params), params)


def test_gradients_of_another_dtype_in_a_group_are_named():
    params = {"a": jnp.zeros(4), "b": jnp.zeros(4)}
    grads = {"a": jnp.ones(4), "b": jnp.ones(4, jnp.bfloat16)}
    tx = gbopt.stack_leaves(gbopt.sgd(0.1))
    with pytest.raises(TypeError, match=r"\['a'\], \['b'\].*astype"):
        tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_sharded_large_leaves_keep_their_sharding_and_zero1_applies(axis_type):
    # conftest.py gives eight CPU devices. The large leaf (above max_leaf_size) is passed
    # through, so its moments follow its sharding; the stacked small leaves' state can be
    # split over the data axis by state_shardings (ZeRO-1) like any state.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    params = _params()
    big = NamedSharding(mesh, P("data"))  # 10 x 10 is not divisible by 8: use a 16 x 4
    params["big"] = jnp.arange(64.0, dtype=jnp.float32).reshape(16, 4) / 64
    sharded = dict(params, big=jax.device_put(params["big"], big))
    tx = gbopt.stack_leaves(gbopt.adam(1e-2), group_size=8, max_leaf_size=32)
    state = jax.jit(tx.init)(sharded)
    mu = gbopt.state_get(state, "mu")
    (big_mu,) = [x for x in mu.leaves if x.shape == (16, 4)]
    assert big_mu.sharding.is_equivalent_to(big, 2)

    zero1 = gbopt.state_shardings(state, mesh, "data")
    state = jax.device_put(state, zero1)
    assert mu.stacks[1].shape == (8, 6)
    stacked = gbopt.state_get(state, "mu").stacks[1]
    assert stacked.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 2)

    step = jax.jit(
        lambda p, s, k: (lambda u, s: (gbopt.apply_updates(p, u), s))(
            *tx.update(_grads(p, k), s, p)
        )
    )
    p_sh = sharded
    for k in range(3):
        p_sh, state = step(p_sh, state, k)
    p_ref, _, _ = _run(gbopt.adam(1e-2), params, 3)
    jax.tree.map(lambda a, b: np.testing.assert_array_max_ulp(a, b, maxulp=4), p_sh, p_ref)
