"""Hyperparameters are checked when a transform is built (issue 6, point 1).

Every bad value raises at build time with a message that names the argument, shows the
value and states the allowed range (``ValueError``), or names the argument and the type
received (``TypeError``). Valid boundary values and traced values are accepted.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt


def _accumulate_square(decay):
    return gbopt.accumulate_square(decay)


def _rmsprop_momentum(momentum):
    return gbopt.rmsprop(0.1, momentum=momentum)


# None is a valid value of these arguments (a sum of squares; no velocity).
NONE_IS_VALID = (_accumulate_square, _rmsprop_momentum)


# (factory, argument, kind): every hyperparameter of every public factory, by kind.
ARGUMENTS = [
    (lambda v: gbopt.sgd(v), "learning_rate", "lr"),
    (lambda v: gbopt.gd(v), "learning_rate", "lr"),
    (lambda v: gbopt.momentum(v), "learning_rate", "lr"),
    (lambda v: gbopt.momentum(0.1, momentum=v), "momentum", "decay"),
    (lambda v: gbopt.nesterov(v), "learning_rate", "lr"),
    (lambda v: gbopt.nesterov(0.1, momentum=v), "momentum", "decay"),
    (lambda v: gbopt.adagrad(v), "learning_rate", "lr"),
    (lambda v: gbopt.adagrad(0.1, eps=v), "eps", "eps"),
    (lambda v: gbopt.rmsprop(v), "learning_rate", "lr"),
    (lambda v: gbopt.rmsprop(0.1, decay=v), "decay", "decay"),
    (lambda v: gbopt.rmsprop(0.1, eps=v), "eps", "eps"),
    (lambda v: gbopt.rmsprop(0.1, initial_scale=v), "initial_scale", "eps"),
    (_rmsprop_momentum, "momentum", "decay"),
    (lambda v: gbopt.adagrad(0.1, initial_accumulator_value=v), "initial_accumulator_value", "eps"),
    (lambda v: gbopt.rmsprop_nesterov(v), "learning_rate", "lr"),
    (lambda v: gbopt.rmsprop_nesterov(0.1, decay=v), "decay", "decay"),
    (lambda v: gbopt.rmsprop_nesterov(0.1, momentum=v), "momentum", "decay"),
    (lambda v: gbopt.rmsprop_nesterov(0.1, eps=v), "eps", "eps"),
    (lambda v: gbopt.adam(v), "learning_rate", "lr"),
    (lambda v: gbopt.adam(0.1, b1=v), "b1", "decay"),
    (lambda v: gbopt.adam(0.1, b2=v), "b2", "decay"),
    (lambda v: gbopt.adam(0.1, eps=v), "eps", "eps"),
    (lambda v: gbopt.scale_by_learning_rate(v), "learning_rate", "lr"),
    (lambda v: gbopt.trace(v), "decay", "decay"),
    (lambda v: gbopt.ema(v), "decay", "decay"),
    (_accumulate_square, "decay", "decay"),
    (
        lambda v: gbopt.accumulate_square(initial_accumulator_value=v),
        "initial_accumulator_value",
        "eps",
    ),
    (lambda v: gbopt.bias_correction(v), "decay", "decay"),
    (lambda v: gbopt.add_decayed_weights(v), "weight_decay", "eps"),
    (lambda v: gbopt.clip_by_global_norm(v), "max_norm", "positive"),
    (lambda v: gbopt.scale(v), "step_size", "finite"),
    (lambda v: gbopt.add(v), "value", "finite"),
]

NAN, INF = float("nan"), float("inf")

# Out-of-range values by kind, with the range the message must state.
BAD_VALUES = {
    "lr": [
        -1e-3,
        -INF,
        NAN,
        INF,
        np.float32(-0.5),
        np.float64(NAN),
        jnp.asarray(-1.0),
        jnp.asarray(-0.5, jnp.bfloat16),
    ],
    "decay": [1.0, 1.5, -0.1, NAN, INF, np.float32(1.0), jnp.asarray(1.0, jnp.float16)],
    "eps": [-1e-8, NAN, INF, -INF, np.float64(-1.0)],
    "positive": [0.0, -1.0, NAN, INF],
    "finite": [NAN, INF, -INF],
}
ALLOWED = {
    "lr": "a finite number >= 0",
    "decay": "in [0, 1)",
    "eps": "a finite number >= 0",
    "positive": "a finite number > 0",
    "finite": "a finite number",
}
# Values that are not real numbers: a TypeError naming the argument and the type.
NOT_NUMBERS = ["0.1", None, [0.1], True, 1j, jnp.asarray(True), np.asarray([1 + 2j])]

VALUE_CASES = [
    pytest.param(build, name, bad, ALLOWED[kind], id=f"{i}-{name}-{j}")
    for i, (build, name, kind) in enumerate(ARGUMENTS)
    for j, bad in enumerate(BAD_VALUES[kind])
]
TYPE_CASES = [
    pytest.param(build, name, bad, id=f"{i}-{name}-{j}")
    for i, (build, name, _) in enumerate(ARGUMENTS)
    for j, bad in enumerate(NOT_NUMBERS)
    # accumulate_square(None) is the sum of squares (AdaGrad), not a bad value.
    if not (bad is None and build in NONE_IS_VALID)
]


def _shown(value) -> str:
    """How the message shows a scalar value (all the bad values here are exact in float32)."""
    return re.escape(str(float(np.asarray(value))))


@pytest.mark.parametrize("build, name, bad, allowed", VALUE_CASES)
def test_out_of_range_value_raises_naming_argument_value_and_range(build, name, bad, allowed):
    with pytest.raises(
        ValueError, match=rf"`{name}` must be {re.escape(allowed)}.*got {_shown(bad)}"
    ):
        build(bad)


@pytest.mark.parametrize("build, name, bad", TYPE_CASES)
def test_non_numeric_value_raises_type_error_naming_argument(build, name, bad):
    with pytest.raises(TypeError, match=rf"`{name}` must be a (real )?number"):
        build(bad)


def test_array_hyperparameter_is_checked_element_by_element():
    lrs = jnp.asarray([1e-3, -2.0, 1e-2])
    with pytest.raises(
        ValueError, match=r"`learning_rate` must be .*; got -2\.0 \(in learning_rate"
    ):
        gbopt.sgd(lrs)
    with pytest.raises(ValueError, match=r"`b2` must be in \[0, 1\).*got 1\.0 \(in b2"):
        gbopt.adam(1e-3, b2=np.asarray([0.99, 1.0]))
    with pytest.raises(ValueError, match=r"`learning_rate` must not be empty"):
        gbopt.sgd(np.zeros((0,)))


NESTEROV_ZERO = [0, 0.0, np.float32(0.0), jnp.asarray(0.0), np.asarray([0.9, 0.0])]


@pytest.mark.parametrize("zero", NESTEROV_ZERO, ids=range(len(NESTEROV_ZERO)))
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda m: gbopt.nesterov(0.1, momentum=m), "momentum"),
        (lambda m: gbopt.rmsprop_nesterov(0.1, momentum=m), "momentum"),
        (lambda m: gbopt.trace(m, nesterov=True), "decay"),
        (lambda m: gbopt.rmsprop(0.1, momentum=m, nesterov=True), "momentum"),
    ],
    ids=["nesterov", "rmsprop_nesterov", "trace", "rmsprop"],
)
def test_nesterov_with_zero_momentum_raises(build, name, zero):
    with pytest.raises(ValueError, match=rf"`{name}` must be in \(0, 1\) with Nesterov.*plain SGD"):
        build(zero)


def test_zero_momentum_without_nesterov_is_plain_momentum():
    assert isinstance(gbopt.momentum(0.1, momentum=0.0), gbopt.GradientTransformation)
    assert isinstance(gbopt.trace(0.0), gbopt.GradientTransformation)


BAD_FLAGS = [
    (lambda v: gbopt.trace(0.9, nesterov=v), "nesterov"),
    (lambda v: gbopt.ema(0.9, debias=v), "debias"),
    (lambda v: gbopt.scale_by_learning_rate(0.1, flip_sign=v), "flip_sign"),
    (lambda v: gbopt.momentum(0.1, learning_rate_in_velocity=v), "learning_rate_in_velocity"),
    (lambda v: gbopt.nesterov(0.1, learning_rate_in_velocity=v), "learning_rate_in_velocity"),
    (lambda v: gbopt.adagrad(0.1, eps_in_sqrt=v), "eps_in_sqrt"),
    (lambda v: gbopt.rmsprop(0.1, eps_in_sqrt=v), "eps_in_sqrt"),
    (lambda v: gbopt.rmsprop(0.1, centered=v), "centered"),
    (lambda v: gbopt.rmsprop(0.1, momentum=0.9, nesterov=v), "nesterov"),
]


@pytest.mark.parametrize("value", ["yes", 1, None], ids=["str", "int", "None"])
@pytest.mark.parametrize("build, name", BAD_FLAGS, ids=range(len(BAD_FLAGS)))
def test_non_bool_flag_raises_type_error(build, name, value):
    with pytest.raises(
        TypeError, match=rf"`{name}` must be True or False, got {type(value).__name__}"
    ):
        build(value)


BAD_TRANSFORMS = [
    (
        lambda: gbopt.chain(gbopt.sgd(0.1), 3),
        TypeError,
        r"`transforms\[1\]` must be a gradient transformation.*got int",
    ),
    (
        lambda: gbopt.chain(gbopt.adam),
        TypeError,
        r"`transforms\[0\]`.*call it: gbopt\.adam\(learning_rate\)",
    ),
    (
        lambda: gbopt.divide(gbopt.identity(), "x"),
        TypeError,
        r"`denominator` must be a gradient transformation",
    ),
    (
        lambda: gbopt.divide(None, gbopt.identity()),
        TypeError,
        r"`numerator` must be a gradient transformation",
    ),
    (
        lambda: gbopt.skip_nonfinite(None),
        TypeError,
        r"`inner` must be a gradient transformation.*NoneType",
    ),
    (
        lambda: gbopt.with_step_count(3),
        TypeError,
        r"`transform` must be a gradient transformation.*got int",
    ),
    (
        lambda: gbopt.with_step_count(lambda t: 3),
        TypeError,
        r"`build\(step\)` must be a gradient transformation.*got int",
    ),
]


@pytest.mark.parametrize("make, error, message", BAD_TRANSFORMS, ids=range(len(BAD_TRANSFORMS)))
def test_combinators_reject_what_is_not_a_transform(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "build",
    [
        lambda: gbopt.sgd(0.0),
        lambda: gbopt.momentum(0.0, momentum=0.0),
        lambda: gbopt.adam(0.0, b1=0.0, b2=0.0, eps=0.0),
        lambda: gbopt.rmsprop(1e-3, decay=0.0, eps=0.0),
        lambda: gbopt.adagrad(1e-3, eps=0.0),
        lambda: gbopt.adam(np.float32(1e-3), b1=np.float64(0.9), b2=jnp.asarray(0.999)),
        lambda: gbopt.adam(jnp.asarray([1e-3, 1e-2])),
        lambda: gbopt.sgd(optax.linear_schedule(0.1, 0.0, 10)),
        lambda: gbopt.accumulate_square(initial_accumulator_value=0.1),
        lambda: gbopt.scale(-1.0),
        lambda: gbopt.add(-1e-3),
        lambda: gbopt.trace(0.9, nesterov=np.bool_(True)),
        lambda: gbopt.adam(jnp.asarray(1e-3, jnp.bfloat16), b1=jnp.asarray(0.9, jnp.float16)),
        lambda: gbopt.momentum(jnp.asarray(1, jnp.int32), momentum=np.int8(0)),
    ],
    ids=range(14),
)
def test_valid_boundary_values_are_accepted(build):
    assert isinstance(build(), gbopt.GradientTransformation)


def test_traced_hyperparameters_are_accepted_and_used():
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.5, 0.25])}

    @jax.jit
    def step(lr, b1):
        tx = gbopt.adam(lr, b1=b1)
        return tx.update(grads, tx.init(params), params)[0]

    # Traced values cannot be inspected at build time; they are used as given. Adam's
    # first step is -lr * g / (|g| + eps).
    g = np.asarray([0.5, 0.25])
    np.testing.assert_allclose(step(0.1, 0.9)["w"], -0.1 * g / (np.abs(g) + 1e-8), rtol=1e-6)
