"""optax both ways: gbopt transforms inside optax, optax transforms inside gbopt."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS

import gbopt


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(3)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b": jnp.asarray(rng.normal(size=(4,)), dtype),
    }


def _loss(params):
    return sum(jnp.sum(jnp.cos(p) + 0.1 * p**2) for p in jax.tree.leaves(params))


def _trajectory(tx, params, steps, *, apply=gbopt.apply_updates, **update_kwargs):
    static = {k: v for k, v in update_kwargs.items() if callable(v)}
    arrays = {k: v for k, v in update_kwargs.items() if not callable(v)}

    @jax.jit
    def step(params, state, arrays):
        updates, state = tx.update(jax.grad(_loss)(params), state, params, **arrays, **static)
        return apply(params, updates), state

    state = tx.init(params)
    out = []
    for _ in range(steps):
        params, state = step(params, state, arrays)
        out.append(params)
    return out


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        chex.assert_trees_all_equal(x, y)


def _asserting_transform(*names):
    """An optax transform that fails unless ``update`` receives the named keyword arguments."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None, **extra_args):
        for name in names:
            assert name in extra_args, f"`{name}` did not reach the optax transform"
        return updates, state

    return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------
# gbopt's type is optax's.


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gbopt_transforms_are_optax_extra_args_transforms(name):
    tx = OPTIMIZERS[name]()
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert isinstance(tx, optax.GradientTransformation)
    assert optax.with_extra_args_support(tx) is tx  # optax never wraps it again


# ---------------------------------------------------------------------------------------
# gbopt inside optax.


def test_gbopt_before_and_after_optax_transforms_in_optax_chain():
    params = _params()
    # gbopt's trace then optax's learning rate == optax.sgd with momentum.
    _assert_same(
        _trajectory(optax.chain(gbopt.trace(0.9), optax.scale_by_learning_rate(0.05)), params, 5),
        _trajectory(optax.sgd(0.05, momentum=0.9), params, 5),
    )
    # optax's Adam scaling then gbopt's learning rate == optax.adam.
    _assert_same(
        _trajectory(
            optax.chain(optax.scale_by_adam(), gbopt.scale_by_learning_rate(0.05)), params, 5
        ),
        _trajectory(optax.adam(0.05), params, 5),
    )


def test_optax_apply_updates_takes_gbopt_updates():
    params = _params(jnp.bfloat16)
    ours = _trajectory(gbopt.adam(0.05), params, 4)
    theirs = _trajectory(gbopt.adam(0.05), params, 4, apply=optax.apply_updates)
    _assert_same(ours, theirs)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(theirs[-1]))


def test_gbopt_under_optax_multisteps_equals_gbopt_on_the_averaged_gradients():
    k = 3
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        rng = np.random.default_rng(4)
        grads = [
            jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
            for _ in range(4 * k)
        ]
        multi = optax.MultiSteps(
            gbopt.adam(0.05), every_k_schedule=k, accumulator_dtype=jnp.float64
        )
        state, p = multi.init(params), params
        update = jax.jit(multi.update)
        for g in grads:
            updates, state = update(g, state, p)
            p = optax.apply_updates(p, updates)
        tx, ref = gbopt.adam(0.05), params
        ref_state = tx.init(ref)
        for i in range(0, len(grads), k):
            mean = jax.tree.map(lambda *gs: sum(gs) / k, *grads[i : i + k])
            updates, ref_state = tx.update(mean, ref_state, ref)
            ref = gbopt.apply_updates(ref, updates)
        # MultiSteps averages with a running mean, the reference with a sum: round-off.
        chex.assert_trees_all_close(p, ref, rtol=1e-13, atol=0)
        assert not np.allclose(p["w"], params["w"])


ALL_TRANSFORMS = {
    **OPTIMIZERS,
    "chain": lambda: gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.adam(0.05)),
    "inject_hyperparams": lambda: gbopt.inject_hyperparams(gbopt.adam)(0.05),
    "multi_transform": lambda: gbopt.multi_transform(
        {"w": gbopt.adam(0.05), "b": gbopt.momentum(0.05)}, {"w": "w", "b": "b"}
    ),
    "masked": lambda: gbopt.masked(gbopt.rmsprop(0.01), {"w": True, "b": False}),
}


@pytest.mark.parametrize("name", sorted(ALL_TRANSFORMS))
def test_gbopt_accepts_optax_extra_keyword_arguments(name):
    # value=, grad= and value_fn= (what optax's line searches ask for) are accepted and
    # change nothing.
    params = _params()
    tx = ALL_TRANSFORMS[name]()
    g = jax.grad(_loss)(params)
    extra = {"value": _loss(params), "grad": g, "value_fn": _loss}
    with_extra = without = tx.init(params)
    for _ in range(2):
        u1, with_extra = tx.update(g, with_extra, params, **extra)
        u2, without = tx.update(g, without, params)
        chex.assert_trees_all_equal(u1, u2)
    chex.assert_trees_all_equal(with_extra, without)


def test_gbopt_sgd_drives_optax_backtracking_linesearch():
    # optax.chain hands value=, grad=, value_fn= to every member; gbopt's sgd takes them
    # (and ignores them), optax's Armijo line search uses them.
    params = _params()

    def run(first):
        tx = optax.chain(first, optax.scale_by_backtracking_linesearch(max_backtracking_steps=15))

        @jax.jit
        def step(p, state):
            value, grad = jax.value_and_grad(_loss)(p)
            updates, state = tx.update(grad, state, p, value=value, grad=grad, value_fn=_loss)
            return optax.apply_updates(p, updates), state

        state, p, losses = tx.init(params), params, []
        for _ in range(5):
            p, state = step(p, state)
            losses.append(float(_loss(p)))
        return p, losses

    ours, losses = run(gbopt.sgd(1.0))
    theirs, _ = run(optax.sgd(1.0))
    chex.assert_trees_all_equal(ours, theirs)
    assert all(b < a for a, b in zip([float(_loss(params))] + losses, losses, strict=False))


def test_optax_reduce_on_plateau_after_gbopt_in_optax_chain_reads_value():
    params = {"x": jnp.ones(2)}
    tx = optax.chain(gbopt.sgd(0.1), optax.contrib.reduce_on_plateau(factor=0.5, patience=2))
    state, update = tx.init(params), jax.jit(tx.update)
    for _ in range(4):  # a flat loss: the plateau halves the scale after `patience` steps
        updates, state = update({"x": jnp.ones(2)}, state, params, value=jnp.float32(1.0))
    assert float(state[1].scale) == 0.5
    np.testing.assert_allclose(updates["x"], -0.05)


def test_optax_inject_hyperparams_wraps_gbopt_factories():
    params = _params()
    _assert_same(
        _trajectory(optax.inject_hyperparams(gbopt.adam)(learning_rate=0.05), params, 4),
        _trajectory(gbopt.inject_hyperparams(gbopt.adam)(learning_rate=0.05), params, 4),
    )


def test_optax_partition_and_masked_take_gbopt_transforms():
    params = _params()
    labels = {"w": "a", "b": "s"}
    _assert_same(
        _trajectory(
            optax.multi_transform({"a": gbopt.adam(0.05), "s": gbopt.sgd(0.1)}, labels), params, 3
        ),
        _trajectory(
            gbopt.multi_transform({"a": gbopt.adam(0.05), "s": gbopt.sgd(0.1)}, labels), params, 3
        ),
    )
    _assert_same(
        _trajectory(optax.masked(gbopt.momentum(0.05), {"w": True, "b": False}), params, 3),
        _trajectory(gbopt.masked(gbopt.momentum(0.05), {"w": True, "b": False}), params, 3),
    )


# ---------------------------------------------------------------------------------------
# optax inside gbopt.


def test_optax_transforms_inside_gbopt_chain_equal_optax_chain():
    params = _params()
    _assert_same(
        _trajectory(
            gbopt.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(), gbopt.scale(-0.05)),
            params,
            5,
        ),
        _trajectory(
            optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(), optax.scale(-0.05)),
            params,
            5,
        ),
    )


@pytest.mark.parametrize(
    "wrap",
    [
        lambda t: gbopt.chain(gbopt.clip_by_global_norm(1.0), t),
        lambda t: gbopt.divide(gbopt.chain(t, gbopt.scale(2.0)), gbopt.add(1.0)),
        lambda t: gbopt.with_step_count(
            lambda step: gbopt.chain(t, gbopt.scale_by_learning_rate(0.1, step=step))
        ),
        lambda t: gbopt.inject_hyperparams(gbopt.chain)(t, gbopt.sgd(0.1)),
        lambda t: gbopt.multi_transform(
            {"a": t, "b": gbopt.chain(t, gbopt.sgd(0.1))}, {"w": "a", "b": "b"}
        ),
        lambda t: gbopt.masked(t, {"w": True, "b": False}),
    ],
    ids=["chain", "divide", "with_step_count", "inject_hyperparams", "multi_transform", "masked"],
)
def test_every_combinator_hands_extra_arguments_to_optax_members(wrap):
    tx = wrap(_asserting_transform("value", "grad", "value_fn"))
    params = _params()
    state = tx.init(params)
    g = jax.grad(_loss)(params)
    tx.update(g, state, params, value=_loss(params), grad=g, value_fn=_loss)  # passes
    with pytest.raises(AssertionError, match="`value` did not reach the optax transform"):
        tx.update(g, state, params, grad=g, value_fn=_loss)


def test_plain_optax_transform_without_extra_args_works_in_gbopt_chain():
    # An optax.GradientTransformation that knows nothing of extra arguments is wrapped
    # by gbopt.chain, so value= does not break it.
    plain = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda u, s, p=None: (u, s))
    assert not isinstance(plain, optax.GradientTransformationExtraArgs)
    params = _params()
    _assert_same(
        _trajectory(gbopt.chain(plain, gbopt.sgd(0.1)), params, 2, value=jnp.float32(0.0)),
        _trajectory(gbopt.sgd(0.1), params, 2),
    )


def test_optax_lbfgs_pieces_inside_gbopt_chain_equal_optax_chain():
    # L-BFGS with its zoom line search, which needs value=, grad= and value_fn=.
    params = {"x": jnp.asarray([1.5, -0.5, 2.0])}

    def rosenbrock(p):
        x = p["x"]
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def run(chain, scale):
        tx = chain(
            optax.scale_by_lbfgs(),
            scale(-1.0),
            optax.scale_by_zoom_linesearch(max_linesearch_steps=10),
        )
        value_and_grad = optax.value_and_grad_from_state(rosenbrock)

        def body(carry, _):
            p, state = carry
            value, grad = value_and_grad(p, state=state)
            updates, state = tx.update(grad, state, p, value=value, grad=grad, value_fn=rosenbrock)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), length=8))(params)
        return p

    ours = run(gbopt.chain, gbopt.scale)
    chex.assert_trees_all_equal(ours, run(optax.chain, optax.scale))
    assert float(rosenbrock(ours)) < 0.1 * float(rosenbrock(params))


def test_jit_and_scan_over_an_optax_gbopt_mix():
    tx = optax.chain(
        gbopt.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-3), gbopt.adam(0.05)
    )
    params = _params()

    def body(carry, _):
        p, s = carry
        updates, s = tx.update(jax.grad(_loss)(p), s, p)
        return (optax.apply_updates(p, updates), s), _loss(p)

    (p, _), losses = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), length=50))(params)
    assert losses[-1] < losses[0]
