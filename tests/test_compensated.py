"""gbopt.kahan_summation and gbopt.stochastic_rounding: bfloat16 parameters without a master copy.

Kahan summation is compared bit for bit with torch-optimi's ``kahan_sum=True`` (its SGD
with ``lr=1`` adds exactly the update it is given, so that any update stream can be fed
to both) and, in float64, with the exact sum of the updates. Stochastic rounding is
checked for its two candidates, its mean and its determinism.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gbopt


def _stream(rng, n, shape, scale):
    """Updates of mixed signs and sizes, mostly far below an ulp of parameters near 1."""
    return [
        (rng.normal(size=shape) * scale * 10.0 ** rng.uniform(-2, 0, size=shape)).astype(np.float32)
        for _ in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_kahan_equals_torch_optimi_bit_for_bit(dtype):
    torch = pytest.importorskip("torch")
    optimi = pytest.importorskip("optimi")
    rng = np.random.default_rng(0)
    np_dtype = getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.float16
    w0 = rng.uniform(0.5, 2.0, size=(64,)).astype(np_dtype)
    stream = [u.astype(np_dtype) for u in _stream(rng, 200, (64,), 1e-3)]

    p = torch.nn.Parameter(torch.tensor(w0.astype(np.float32)).to(getattr(torch, dtype)))
    opt = optimi.SGD([p], lr=1.0, kahan_sum=True)  # SGD with lr=1 adds -grad: the update
    tx = gbopt.kahan_summation()
    params = {"w": jnp.asarray(w0)}
    state = tx.init(params)
    step = jax.jit(tx.update)
    for u in stream:
        p.grad = -torch.tensor(u.astype(np.float32)).to(getattr(torch, dtype))
        opt.step()
        out, state = step({"w": jnp.asarray(u)}, state, params)
        params = gbopt.apply_updates(params, out)
        theirs_w = p.detach().float().numpy()
        theirs_c = opt.state[p]["kahan_comp"].float().numpy()
        np.testing.assert_array_equal(np.asarray(params["w"], np.float32), theirs_w)
        np.testing.assert_array_equal(np.asarray(state.compensation["w"], np.float32), theirs_c)
    assert params["w"].dtype == jnp.dtype(np_dtype)


def test_kahan_tracks_the_exact_sum_in_float64():
    rng = np.random.default_rng(1)
    w0 = rng.uniform(0.5, 2.0, size=(256,)).astype(ml_dtypes.bfloat16)
    stream = [np.abs(u) for u in _stream(rng, 400, (256,), 2e-4)]  # a steady drift
    exact = w0.astype(np.float64) + np.sum(np.asarray(stream, np.float64), axis=0)

    tx = gbopt.kahan_summation()
    params = {"w": jnp.asarray(w0)}
    plain = jnp.asarray(w0)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for u in stream:
        out, state = step({"w": jnp.asarray(u)}, state, params)
        params = gbopt.apply_updates(params, out)
        plain = gbopt.apply_updates(plain, jnp.asarray(u))
    w = np.asarray(params["w"], np.float64)
    c = np.asarray(state.compensation["w"], np.float64)
    ulp = np.spacing(np.abs(exact).astype(ml_dtypes.bfloat16).astype(np.float32)).astype(
        np.float64
    ) * 2.0 ** (24 - 8)  # an ulp of bfloat16 at the exact value
    # w + c is the exact sum but for the roundings of c (a few thousandths of an ulp of w
    # a step, partly cancelling): well under a tenth of an ulp after 400 steps
    err = np.abs(w + c - exact) / ulp
    assert np.max(err) < 0.1 and np.mean(err) < 0.03, (np.max(err), np.mean(err))
    assert np.all(np.abs(w - exact) <= ulp)  # the parameter itself: within one ulp
    # plain bfloat16 falls many ulps behind (most updates round away)
    assert np.mean(np.abs(np.asarray(plain, np.float64) - exact) / ulp) > 2


def test_kahan_output_lands_exactly_with_optax_apply_updates():
    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.bfloat16)}
    tx = optax.chain(optax.adam(1e-3), gbopt.kahan_summation())
    state = tx.init(params)
    grads = {"w": jnp.asarray(rng.normal(size=(8, 8)), jnp.bfloat16)}
    for _ in range(3):
        out, state = tx.update(grads, state, params)
        assert out["w"].dtype == jnp.float32
        new = optax.apply_updates(params, out)
        np.testing.assert_array_equal(
            np.asarray(new["w"], np.float32),
            np.asarray(params["w"], np.float32) + np.asarray(out["w"]),
        )
        params = new
    assert params["w"].dtype == jnp.bfloat16
    assert state[1].compensation["w"].dtype == jnp.bfloat16


def test_kahan_on_float32_parameters_is_classic_compensated_summation():
    params = {"w": jnp.ones((4,), jnp.float32)}
    tx = gbopt.kahan_summation()
    state = tx.init(params)
    assert state.compensation["w"].dtype == jnp.float32
    for _ in range(1000):
        out, state = tx.update({"w": jnp.full((4,), 1e-8, jnp.float32)}, state, params)
        params = gbopt.apply_updates(params, out)
    total = np.float64(params["w"][0]) + np.float64(state.compensation["w"][0])
    assert abs(total - (1 + 1e-5)) < 1e-12
    assert params["w"][0] > 1  # plain float32 would stay at exactly 1


@pytest.mark.slow
def test_round_stochastically_is_exact_on_average():
    x = jnp.full((40000,), 1.0 + 2.0**-10, jnp.float32)  # an eighth of the way up an ulp
    r = gbopt.round_stochastically(x, jnp.bfloat16, jax.random.key(0))
    assert r.dtype == jnp.bfloat16
    values = set(np.unique(np.asarray(r, np.float32)).tolist())
    assert values == {1.0, 1.0 + 2.0**-7}
    up = np.mean(np.asarray(r, np.float32) > 1)
    assert abs(up - 0.125) < 4 * np.sqrt(0.125 * 0.875 / 40000)
    # negative numbers, numbers of the target dtype, infinities and NaN
    y = jnp.asarray([-(1.0 + 2.0**-10), 1.5, -jnp.inf, jnp.inf, jnp.nan, 0.0], jnp.float32)
    r = np.asarray(gbopt.round_stochastically(y, jnp.bfloat16, jax.random.key(1)), np.float32)
    assert r[0] in (-1.0, -(1.0 + 2.0**-7))
    np.testing.assert_array_equal(r[1:4], [1.5, -np.inf, np.inf])
    assert np.isnan(r[4]) and r[5] == 0
    f16 = gbopt.round_stochastically(
        jnp.full((8,), 1 + 2.0**-12, jnp.float32), jnp.float16, jax.random.key(2)
    )
    assert set(np.asarray(f16, np.float32).tolist()) <= {1.0, 1 + 2.0**-10}


@pytest.mark.slow
def test_stochastic_rounding_tracks_the_sum_and_is_deterministic():
    params = {"w": jnp.ones((4096,), jnp.bfloat16)}
    tx = gbopt.chain(gbopt.sgd(1.0), gbopt.stochastic_rounding(0))
    g = {"w": jnp.full((4096,), -1e-4, jnp.bfloat16)}  # +1e-4 a step, 1/78 of an ulp

    def run(tx):
        p, s = params, tx.init(params)
        step = jax.jit(tx.update)
        for _ in range(50):
            out, s = step(g, s, p)
            p = gbopt.apply_updates(p, out)
        return p, s

    p1, s1 = run(tx)
    p2, _ = run(gbopt.chain(gbopt.sgd(1.0), gbopt.stochastic_rounding(0)))
    np.testing.assert_array_equal(p1["w"], p2["w"])
    exact = 1 + 50 * float(jnp.asarray(-1e-4, jnp.bfloat16)) * -1
    mean = float(jnp.mean(p1["w"].astype(jnp.float32)))
    # the mean of 4096 independent walks: standard error about 0.4 ulp / sqrt(4096)
    assert abs(mean - exact) < 4 * 2.0**-7 * np.sqrt(50 / 78) / 64 + 1e-6
    plain = gbopt.apply_updates(params, {"w": jnp.full((4096,), 1e-4, jnp.float32)})
    assert float(plain["w"][0]) == 1.0  # without it, every step rounds away
    p3, _ = run(gbopt.chain(gbopt.sgd(1.0), gbopt.stochastic_rounding(1)))
    assert not np.array_equal(np.asarray(p1["w"]), np.asarray(p3["w"]))


def test_stochastic_rounding_passes_float32_updates_through():
    params = {"w": jnp.ones((3,), jnp.float32)}
    tx = gbopt.stochastic_rounding(jax.random.key(3))
    u = {"w": jnp.asarray([1e-9, -2.0, 0.5], jnp.float32)}
    out, _ = tx.update(u, tx.init(params), params)
    np.testing.assert_array_equal(out["w"], u["w"])


def test_they_need_params_and_a_good_key():
    for tx in (gbopt.kahan_summation(), gbopt.stochastic_rounding()):
        params = {"w": jnp.ones(2, jnp.bfloat16)}
        with pytest.raises(ValueError, match="needs the parameters"):
            tx.update(params, tx.init(params))
    with pytest.raises(TypeError, match="`key` must be an int seed or a PRNG key"):
        gbopt.stochastic_rounding("seed")
    tx = gbopt.kahan_summation()
    with pytest.raises(ValueError, match="KahanSummationState"):
        tx.update({"w": jnp.ones(2)}, (), {"w": jnp.ones(2)})
