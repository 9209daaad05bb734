"""Equinox: the filtered training loop of Equinox's documentation, with a gbopt optimizer."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import gbopt


def _data(dtype=jnp.float32):
    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x / 16.0, dtype), jnp.asarray(y, jnp.int32)


def _model(dtype=jnp.float32):
    # jax.nn.relu and the ints of the widths are leaves that are not arrays: the reason
    # for eqx.filter below
    model = eqx.nn.MLP(
        64, 10, width_size=32, depth=1, activation=jax.nn.relu, key=jax.random.key(0)
    )
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, model)


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


def _train(tx, steps=60, dtype=jnp.float32):
    x, y = _data(dtype)
    model = _model(dtype)
    opt_state = tx.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, opt_state):
        loss, grads = eqx.filter_value_and_grad(_loss)(model, x, y)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(steps):
        model, opt_state, loss = step(model, opt_state)
        losses.append(float(loss))
    return model, opt_state, losses


@pytest.mark.parametrize("name", ["adamw", "lion", "nadam"])
def test_equinox_filtered_loop_trains_as_optax_does(name):
    """The same loop with gbopt.<name> and optax.<name>, in float64: the same losses and
    trained weights (to float64 rounding, as the trajectory tests), and the loss falls."""
    with jax.enable_x64(True):
        model, _, losses = _train(getattr(gbopt, name)(3e-3), dtype=jnp.float64)
        ref_model, _, ref_losses = _train(getattr(optax, name)(3e-3), dtype=jnp.float64)
        weights = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        ref_weights = jax.tree.leaves(eqx.filter(ref_model, eqx.is_inexact_array))
    assert losses[-1] < losses[0] / 3, (losses[0], losses[-1])
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)
    assert all(w.dtype == jnp.float64 for w in weights)
    for a, b in zip(weights, ref_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-10)


def test_equinox_state_mirrors_the_module():
    """The optimizer's statistics have the module's structure (its non-array fields as
    None), and the module keeps its non-array fields through the updates."""
    model, opt_state, _ = _train(gbopt.adam(1e-3), steps=3)
    params = eqx.filter(model, eqx.is_inexact_array)
    mu = opt_state.inner_state[0].numerator[0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(params)
    assert model.activation is jax.nn.relu
    assert mu.layers[0].weight.shape == (32, 64)


def test_equinox_unfiltered_model_error_says_to_filter():
    """Handing the whole module (with its activation function) to init names the leaf and
    gives Equinox's fix."""
    with pytest.raises(TypeError, match=r"eqx\.filter\(model, eqx\.is_inexact_array\)"):
        gbopt.adam(1e-3).init(_model())
