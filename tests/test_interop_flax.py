"""Flax: linen's TrainState and NNX's Optimizer train with gbopt transforms."""

from __future__ import annotations

import chex
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state
from sklearn.datasets import load_digits

import gbopt


@pytest.fixture(scope="module")
def digits():
    """The 1,797 8x8 digit images shipped inside scikit-learn (no download)."""
    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y, jnp.int32)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


MODEL = MLP()


@pytest.fixture(scope="module")
def linen_params(digits):
    return jax.jit(MODEL.init)(jax.random.key(0), digits[0][:1])


def _linen_state(tx, params):
    return train_state.TrainState.create(apply_fn=MODEL.apply, params=params, tx=tx)


def _linen_loss(params, apply_fn, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y).mean()


@jax.jit
def _linen_step(state, x, y):
    loss, grads = jax.value_and_grad(_linen_loss)(state.params, state.apply_fn, x, y)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def _apply(state, grads):
    return state.apply_gradients(grads=grads)


def _train_linen(state, x, y, steps):
    losses = []
    for _ in range(steps):
        state, loss = _linen_step(state, x, y)
        losses.append(float(loss))
    return state, losses


def test_linen_train_state_trains_an_mlp_on_digits(digits, linen_params):
    state, losses = _train_linen(_linen_state(gbopt.adam(1e-2), linen_params), *digits, 200)
    assert isinstance(state.opt_state, gbopt.StepCountState)
    assert int(state.opt_state.count) == 200
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_linen_biases_with_another_learning_rate(digits, linen_params):
    # The biases get Adam(1e-2), the kernels Adam(1e-3): fed TrainState's gradients, each
    # group's update is bit for bit the update of its own optimizer.
    labels = gbopt.label_by_path(lambda path, leaf: "bias" if path[-1] == "bias" else "kernel")
    tx = gbopt.multi_transform({"kernel": gbopt.adam(1e-3), "bias": gbopt.adam(1e-2)}, labels)
    state = _linen_state(tx, linen_params)
    kernel_tx, bias_tx = gbopt.adam(1e-3), gbopt.adam(1e-2)
    s_kernel, s_bias = kernel_tx.init(state.params), bias_tx.init(state.params)
    grad_fn = jax.jit(jax.grad(_linen_loss), static_argnums=1)
    update, kernel_update, bias_update = (jax.jit(t.update) for t in (tx, kernel_tx, bias_tx))
    for _ in range(4):
        grads = grad_fn(state.params, state.apply_fn, *digits)
        updates, _ = update(grads, state.opt_state, state.params)
        u_kernel, s_kernel = kernel_update(grads, s_kernel, state.params)
        u_bias, s_bias = bias_update(grads, s_bias, state.params)
        for layer in ("Dense_0", "Dense_1"):
            got = updates["params"][layer]
            np.testing.assert_array_equal(got["bias"], u_bias["params"][layer]["bias"])
            np.testing.assert_array_equal(got["kernel"], u_kernel["params"][layer]["kernel"])
        state = _apply(state, grads)
    # The kernels' Adam keeps no state for the biases.
    mu = gbopt.state_get(state.opt_state, "mu", group="kernel")
    assert mu["params"]["Dense_0"]["bias"] == gbopt.MaskedNode()


def test_linen_train_state_checkpoint_resumes_bitwise(digits, linen_params):
    x, y = digits
    tx = gbopt.adam(1e-2)  # the same object, so that the jitted step is reused
    state, _ = _train_linen(_linen_state(tx, linen_params), x, y, 5)
    data = flax.serialization.to_bytes(state)
    end, _ = _train_linen(state, x, y, 3)

    template = _linen_state(tx, linen_params)
    restored = flax.serialization.from_bytes(template, data)
    restored = restored.replace(
        params=gbopt.restore_state(template.params, restored.params),
        opt_state=gbopt.restore_state(template.opt_state, restored.opt_state),
    )
    resumed, _ = _train_linen(restored, x, y, 3)
    chex.assert_trees_all_equal(resumed.params, end.params)
    chex.assert_trees_all_equal(resumed.opt_state, end.opt_state)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def _nnx_loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


@nnx.jit
def _nnx_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def test_nnx_optimizer_trains_an_mlp_on_digits(digits):
    model = NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, gbopt.adam(1e-2), wrt=nnx.Param)
    losses = [float(_nnx_step(model, optimizer, *digits)) for _ in range(200)]
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    assert int(optimizer.step[...]) == 200
    assert int(optimizer.opt_state.count[...]) == 200


def test_nnx_optimizer_with_per_group_learning_rates(digits):
    # label_by_path sees the same paths at init (nnx.Param variables) and at update
    # (plain arrays); the biases get SGD(0.5), the kernels are frozen.
    labels = gbopt.label_by_path(lambda path, leaf: "bias" if path[-1] == "bias" else "kernel")
    tx = gbopt.multi_transform({"bias": gbopt.sgd(0.5), "kernel": gbopt.set_to_zero()}, labels)
    model = NnxMLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    kernel, bias = model.hidden.kernel[...], model.hidden.bias[...]
    grads = nnx.jit(nnx.grad(_nnx_loss))(model, *digits)
    nnx.jit(lambda m, o, g: o.update(m, g))(model, optimizer, grads)
    np.testing.assert_array_equal(model.hidden.kernel[...], kernel)
    np.testing.assert_array_equal(
        model.hidden.bias[...], bias + -np.float32(0.5) * grads.hidden.bias[...]
    )
    # With Adam as the biases' optimizer the state covers the biases only.
    adam = gbopt.multi_transform({"bias": gbopt.adam(1e-2), "kernel": gbopt.set_to_zero()}, labels)
    optimizer = nnx.Optimizer(model, adam, wrt=nnx.Param)
    for _ in range(3):
        _nnx_step(model, optimizer, *digits)
    np.testing.assert_array_equal(model.hidden.kernel[...], kernel)
    assert int(optimizer.opt_state.inner_states["bias"].count[...]) == 3
