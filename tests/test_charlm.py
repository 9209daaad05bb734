"""The demo's character-level language model (gbopt.demo.charlm), on a tiny configuration."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt
from gbopt.demo import charlm


@pytest.fixture(scope="module")
def corpus():
    return charlm.load_corpus(20_000, seed=0)


def test_corpus_is_deterministic_and_split(corpus):
    again = charlm.load_corpus(20_000, seed=0)
    np.testing.assert_array_equal(corpus.train, again.train)
    np.testing.assert_array_equal(corpus.valid, again.valid)
    assert corpus.train.size + corpus.valid.size == 20_000
    assert corpus.valid.size == 2_000
    assert corpus.train.dtype == np.uint8
    other = charlm.load_corpus(20_000, seed=1)
    assert not np.array_equal(corpus.train, other.train)
    # Python source: mostly printable ASCII.
    assert np.mean((corpus.train >= 32) & (corpus.train < 127) | (corpus.train == 10)) > 0.95


def test_corpus_bad_arguments():
    with pytest.raises(ValueError, match="`n_bytes`"):
        charlm.load_corpus(10)
    with pytest.raises(ValueError, match="`valid_fraction`"):
        charlm.load_corpus(5000, valid_fraction=1.5)


def test_config_checks():
    with pytest.raises(ValueError, match="multiple of `n_heads`"):
        charlm.CharLMConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="`n_layers`"):
        charlm.CharLMConfig(n_layers=0)


def test_default_size_is_under_a_few_million():
    shapes = jax.eval_shape(lambda: charlm.init_params(jax.random.key(0)))
    n = charlm.count_params(shapes)
    assert 100_000 < n < 3_000_000


def test_initial_loss_is_about_log_256(corpus):
    config = charlm.TINY
    params = charlm.init_params(jax.random.key(0), config)
    batch = charlm.sample_batch(jax.random.key(1), corpus.train, 8, config.seq_len)
    assert batch["inputs"].shape == (8, config.seq_len)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    value = charlm.loss(params, batch, config)
    assert abs(float(value) - math.log(256)) < 0.1


@pytest.mark.slow
def test_training_lowers_the_validation_loss(corpus):
    config = charlm.TINY
    params = charlm.init_params(jax.random.key(0), config)
    tx = gbopt.adam(1e-2)
    state = tx.init(params)
    valid = charlm.eval_batch(corpus.valid, config.seq_len, 16)
    before = float(charlm.evaluate(params, valid, config))

    @jax.jit
    def step(params, state, key):
        batch = charlm.sample_batch(key, corpus.train, 16, config.seq_len)
        grads = jax.grad(charlm.loss)(params, batch, config)
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    for key in jax.random.split(jax.random.key(2), 60):
        params, state = step(params, state, key)
    after = float(charlm.evaluate(params, valid, config))
    assert after < before - 1.0  # byte frequencies alone take it well below log 256


def test_causal():
    config = charlm.TINY
    params = charlm.init_params(jax.random.key(0), config)
    tokens = jnp.arange(config.seq_len)[None] % 256
    changed = tokens.at[0, -1].set(7)
    a = charlm.logits(params, tokens, config)
    b = charlm.logits(params, changed, config)
    np.testing.assert_allclose(a[0, :-1], b[0, :-1], atol=1e-6)


def test_sampler_under_vmap(corpus):
    keys = jax.random.split(jax.random.key(0), 3)
    batches = jax.vmap(lambda k: charlm.sample_batch(k, corpus.train, 4, 8))(keys)
    assert batches["inputs"].shape == (3, 4, 8)


def test_import_gbopt_does_not_import_the_demo():
    code = "import sys, gbopt; print('gbopt.demo.charlm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
