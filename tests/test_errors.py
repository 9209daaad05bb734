"""Errors that say where and what (issue 13, item 6), and schedules never see a count < 0.

Each case was a bare or misleading message before: ``Cannot determine dtype of
<custom_jvp ...>``, ``mul got incompatible shapes for broadcasting: (2,), (3,)``,
``updates is a Layer but the state's `mu` has a Layer there``, a generic "must be a
gradient transformation" for ``optax.MultiSteps``, ``AdamW() got multiple values for
argument 'lr'`` (or a 2,478-character repr), ``add_decayed_weights needs the parameters``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax
import pytest

import gbopt

PARAMS = {"w": jnp.ones(2)}


def test_a_non_array_leaf_names_its_path_and_equinox_filtering():
    params = {"w": jnp.ones(2), "block": {"act": jax.nn.relu}}
    for tx in (gbopt.adam(1e-3), gbopt.sgd(1e-3), gbopt.pytorch.AdamW()):
        with pytest.raises(
            TypeError,
            match=r"params\['block'\]\['act'\] is a custom_jvp, not an array.*"
            r"eqx\.filter\(model, eqx\.is_inexact_array\)",
        ):
            tx.init(params)


@pytest.mark.parametrize("factory", [gbopt.sgd, gbopt.adam, gbopt.rmsprop])
def test_a_learning_rate_of_the_wrong_shape_is_named(factory):
    tx = factory(jnp.ones(3))
    with pytest.raises(
        ValueError, match=r"`learning_rate` has shape \(3,\), which does not broadcast to an"
    ):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    # One that would silently broadcast the update to a larger shape is refused too.
    tx = factory(jnp.ones((2, 1)))
    with pytest.raises(ValueError, match=r"`learning_rate` has shape \(2, 1\)"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    # A schedule returning an array of the wrong shape as well.
    tx = factory(lambda count: jnp.ones(3) * 1e-3)
    with pytest.raises(ValueError, match=r"`learning_rate` has shape \(3,\)"):
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)
    # Scalars and arrays that broadcast to the leaf are fine.
    for rate in (jnp.asarray(0.1), jnp.full((2,), 0.1)):
        tx = factory(rate)
        tx.update(PARAMS, tx.init(PARAMS), PARAMS)


@flax.struct.dataclass
class Layer:
    w: jax.Array
    activation: str = flax.struct.field(pytree_node=False, default="relu")


def test_a_static_field_mismatch_says_static_fields_differ():
    params = Layer(jnp.ones(2), "relu")
    grads = Layer(jnp.ones(2), "gelu")
    tx = gbopt.adam(1e-3)
    with pytest.raises(
        ValueError,
        match=r"both a Layer, but their static \(non-array\) fields differ: \('gelu',\) "
        r"against \('relu',\).*flax\.struct\.field\(pytree_node=False\)",
    ):
        tx.update(grads, tx.init(params), params)


def test_multisteps_points_to_gradient_transformation():
    with pytest.raises(TypeError, match=r"got a MultiSteps.*\.gradient_transformation\(\)"):
        gbopt.skip_nonfinite(optax.MultiSteps(optax.adam(1e-3), every_k_schedule=2))
    # What the message recommends works.
    tx = gbopt.skip_nonfinite(
        optax.MultiSteps(gbopt.adam(1e-3), every_k_schedule=2).gradient_transformation()
    )
    tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def test_long_reprs_are_cut_in_messages():
    with pytest.raises(TypeError) as info:
        gbopt.skip_nonfinite(list(range(10_000)))
    assert len(str(info.value)) < 400


def test_pytorch_presets_say_that_parameters_go_to_init():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(30, 30)
    for make in (
        lambda: gbopt.pytorch.AdamW(model.parameters(), lr=1e-3),
        lambda: gbopt.pytorch.Adam(list(model.parameters())),
        lambda: gbopt.pytorch.SGD(model.parameters(), lr=0.1),
    ):
        with pytest.raises(TypeError) as info:
            make()
        message = str(info.value)
        assert "got the parameters" in message
        assert "tx.init(params)" in message and len(message) < 400


def test_weight_decay_without_params_names_weight_decay():
    for tx in (
        gbopt.pytorch.AdamW(1e-3),
        gbopt.pytorch.Adam(1e-3, weight_decay=0.1),
        gbopt.add_decayed_weights(0.1),
    ):
        with pytest.raises(ValueError, match=r"`weight_decay` needs the parameters"):
            tx.update(PARAMS, tx.init(PARAMS))


def test_a_schedule_never_sees_a_negative_count():
    seen = []

    def schedule(count):
        if not isinstance(count, jax.core.Tracer):
            seen.append(int(count))
        else:
            jax.debug.callback(lambda c: seen.append(int(c)), count)
        return 0.1 * jnp.ones([])

    makers = [
        lambda: gbopt.sgd(schedule),
        lambda: gbopt.adam(schedule),
        lambda: gbopt.momentum(schedule, learning_rate_in_velocity=False),
        lambda: gbopt.inject_hyperparams(gbopt.adam)(schedule),
        lambda: optax.inject_hyperparams(gbopt.adam)(schedule),
        lambda: gbopt.pytorch.Adagrad(schedule, lr_decay=0.1),
        lambda: gbopt.scale_by_schedule(schedule),
        lambda: gbopt.skip_nonfinite(gbopt.adam(schedule)),
        lambda: gbopt.multi_transform({"a": gbopt.adam(schedule)}, {"w": "a"}),
    ]
    for make in makers:
        tx = make()
        state = jax.jit(tx.init)(PARAMS)
        for _ in range(2):
            _, state = jax.jit(tx.update)(PARAMS, state, PARAMS)
    jax.effects_barrier()
    assert seen and min(seen) == 0
    # The clamp itself: a step of 0 (a count of -1) reads the schedule at 0.
    from gbopt._maps import _schedule_value

    assert float(_schedule_value(lambda c: c * 1.0, jnp.asarray(-1), jnp.float32, "s")) == 0.0
