"""Combinators: chain, divide, with_step_count; optimizers rebuilt from primitives."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import nested_tree

import gbopt


def _params():
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float32), nested_tree(np.random.default_rng(0))
    )


def _run(tx, params, steps=25):
    state = tx.init(params)
    outs = []
    for i in range(steps):
        rng = np.random.default_rng(i)
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        u, state = jax.jit(tx.update)(grads, state, params)
        params = gbopt.apply_updates(params, u)
        outs.append(u)
    return outs, state


def test_adam_rebuilt_by_hand_from_primitives_equals_the_library():
    lr, b1, b2, eps = 1e-2, 0.8, 0.95, 1e-3
    by_hand = gbopt.chain(
        gbopt.divide(
            gbopt.ema(b1, debias=True),
            gbopt.chain(
                gbopt.accumulate_square(b2), gbopt.bias_correction(b2), gbopt.sqrt(), gbopt.add(eps)
            ),
        ),
        gbopt.scale_by_learning_rate(lr),
    )
    ours, _ = _run(gbopt.adam(lr, b1, b2, eps), _params())
    theirs, _ = _run(by_hand, _params())
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=0)


def test_rmsprop_with_eps_outside_the_root_is_a_reordering():
    """Moving eps outside the root (PyTorch's RMSprop) swaps two primitives."""
    lr, rho, eps = 1e-2, 0.9, 1e-2
    outside = gbopt.chain(
        gbopt.divide(
            gbopt.identity(),
            gbopt.chain(gbopt.accumulate_square(rho), gbopt.sqrt(), gbopt.add(eps)),
        ),
        gbopt.scale_by_learning_rate(lr),
    )
    theirs, _ = _run(optax.rmsprop(lr, decay=rho, eps=eps, eps_in_sqrt=False), _params())
    ours, _ = _run(outside, _params())
    chex.assert_trees_all_close(ours, theirs, rtol=2e-5, atol=1e-7)
    inside, _ = _run(gbopt.rmsprop(lr, decay=rho, eps=eps), _params())
    assert not np.allclose(inside[-1]["dense"]["w"], ours[-1]["dense"]["w"], rtol=1e-3)


def test_chain_state_is_the_tuple_of_member_states():
    tx = gbopt.chain(gbopt.trace(0.9), gbopt.scale(2.0))
    state = tx.init(_params())
    assert isinstance(state, tuple) and len(state) == 2
    assert isinstance(state[0], gbopt.TraceState) and state[1] == ()


def test_divide_branches_see_the_same_stream():
    tx = gbopt.divide(gbopt.scale(6.0), gbopt.scale(3.0))
    g = jnp.array([1.0, -2.0])
    u, state = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, [2.0, 2.0])
    assert isinstance(state, gbopt.DivideState)


def test_divide_divides_in_float32_for_float16_updates():
    """float16 1e-8 is 0: dividing in float16 would give 0/0 = NaN for a zero gradient."""
    tx = gbopt.divide(gbopt.identity(), gbopt.chain(gbopt.sqrt(), gbopt.add(1e-8)))
    g = jnp.zeros(3, jnp.float16)
    u, _ = tx.update(g, tx.init(g))
    assert u.dtype == jnp.float16
    np.testing.assert_array_equal(u, np.zeros(3))


def test_with_step_count_keeps_one_count_for_every_piece():
    tx = gbopt.adam(1e-3)
    params = _params()
    _, state = _run(tx, params, steps=4)
    assert isinstance(state, gbopt.StepCountState)
    counts = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.integer)]
    assert len(counts) == 1 and int(counts[0]) == 4


def test_with_step_count_feeds_schedules_the_number_of_previous_updates():
    seen = []
    tx = gbopt.with_step_count(
        lambda t: gbopt.scale_by_learning_rate(lambda c: jnp.asarray(c, jnp.float32), step=t)
    )
    g = jnp.ones(1)
    state = tx.init(g)
    for _ in range(3):
        u, state = tx.update(g, state)
        seen.append(float(u[0]))
    assert seen == [0.0, -1.0, -2.0]


def test_optax_transforms_work_inside_gbopt_chain_with_extra_args():
    received = {}

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        received.update(extra_args)
        return updates, state

    spy = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    tx = gbopt.chain(optax.clip(1.0), spy, optax.scale(-0.5))
    g = jnp.array([3.0, -0.5])
    u, _ = tx.update(g, tx.init(g), None, value=jnp.asarray(7.0))
    np.testing.assert_allclose(u, [-0.5, 0.25])
    assert float(received["value"]) == 7.0


def test_gbopt_transforms_are_optax_transforms():
    tx = gbopt.adam(1e-3)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    combined = optax.chain(optax.clip_by_global_norm(1.0), tx)
    g = {"w": jnp.ones(3)}
    u, _ = combined.update(g, combined.init(g), g, value=jnp.asarray(1.0))
    chex.assert_tree_all_finite(u)


def test_non_transform_arguments_are_rejected_with_a_hint():
    with pytest.raises(TypeError, match=r"transforms\[1\].*call it"):
        gbopt.chain(gbopt.sgd(0.1), gbopt.adam)
