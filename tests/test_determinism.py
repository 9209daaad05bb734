"""The same inputs give bitwise identical outputs across calls and recompiles (point 10)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OPTIMIZERS, nested_tree

import gbopt

TRANSFORMS = {
    **OPTIMIZERS,
    "skip_nonfinite(adam)": lambda: gbopt.skip_nonfinite(gbopt.adam(1e-2)),
    "adamw with clipping": lambda: gbopt.chain(
        gbopt.clip_by_global_norm(1.0), gbopt.add_decayed_weights(1e-2), gbopt.adam(1e-2)
    ),
    "adam schedule": lambda: gbopt.adam(lambda c: 1e-2 * 0.9**c),
}


def _bytes(tree):
    """The structure, dtypes, shapes and raw bytes of every leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(x.dtype, x.shape, np.asarray(x).tobytes()) for x in map(np.asarray, leaves)]


def _trajectory(tx, update, steps=4):
    params = jax.tree.map(jnp.asarray, nested_tree(np.random.default_rng(0), np.float32))
    state = tx.init(params)
    rng = np.random.default_rng(1)
    history = []
    for _ in range(steps):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        updates, state = update(grads, state, params)
        params = gbopt.apply_updates(params, updates)
        history.append(_bytes((updates, state, params)))
    return history


@pytest.mark.parametrize("name", TRANSFORMS)
def test_bitwise_identical_across_calls_and_recompiles(name):
    tx = TRANSFORMS[name]()
    step = jax.jit(tx.update)
    first = _trajectory(tx, step)
    assert _trajectory(tx, step) == first  # the same compiled program, called again
    fresh = TRANSFORMS[name]()  # a new optimizer object: traced and compiled again
    assert _trajectory(fresh, jax.jit(fresh.update)) == first
    eager = _trajectory(tx, tx.update)
    assert _trajectory(tx, tx.update) == eager  # op by op, twice


def test_bitwise_identical_after_clearing_every_cache():
    names = ["adam", "skip_nonfinite(adam)"]
    txs = {n: TRANSFORMS[n]() for n in names}
    before = {n: _trajectory(tx, jax.jit(tx.update)) for n, tx in txs.items()}
    jax.clear_caches()  # (once: it makes every later test in this process compile again)
    for n in names:
        tx = TRANSFORMS[n]()
        assert _trajectory(tx, jax.jit(tx.update)) == before[n]
