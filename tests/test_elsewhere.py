"""Names optax users expect that gbopt leaves to optax: the error says where they are."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt


@pytest.mark.parametrize(
    "name, where",
    [
        ("MultiSteps", "optax.MultiSteps"),
        ("apply_if_finite", "optax.apply_if_finite"),
        ("lookahead", "optax.lookahead"),
        ("contrib", "optax.contrib"),
        ("centralize", "optax.centralize"),
    ],
)
def test_names_left_to_optax_say_where_they_are(name, where):
    with pytest.raises(AttributeError, match=f"use {where}.*accept gbopt transforms"):
        getattr(gbopt, name)
    assert not hasattr(gbopt, name)
    assert name not in gbopt.__all__


def test_other_names_are_plain_attribute_errors():
    with pytest.raises(AttributeError, match="^module 'gbopt' has no attribute 'no_such_name'$"):
        gbopt.no_such_name  # noqa: B018


def _two_steps(tx, params, grads):
    state = tx.init(params)
    for _ in range(2):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_the_wrappers_do_accept_gbopt_transforms():
    """What the message promises: MultiSteps, apply_if_finite and lookahead run gbopt.lion."""
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 3.0])}
    for wrapped in [
        optax.MultiSteps(gbopt.lion(0.1), every_k_schedule=2),
        optax.apply_if_finite(gbopt.lion(0.1), max_consecutive_errors=2),
    ]:
        assert not np.allclose(_two_steps(wrapped, params, grads)["w"], 1.0)
    synced = optax.LookaheadParams.init_synced(params)
    ahead = optax.lookahead(gbopt.lion(0.1), sync_period=2, slow_step_size=0.5)
    out = _two_steps(ahead, synced, grads)
    assert not np.allclose(out.slow["w"], 1.0)
