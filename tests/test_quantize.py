"""gbopt.quantize_state: block-wise 8- and 4-bit optimizer state around any transform.

Checked against: NumPy models of the code books and of nearest-code rounding;
bitsandbytes' ``create_dynamic_map`` and torchao's maps (bit for bit); torchao's
``AdamW8bit`` and ``AdamW4bit`` step by step from the same state (same codes, updates
within float32 rounding); jit, vmap, the eight simulated CPU devices of conftest.py and
a checkpoint round trip.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import OPTIMIZERS
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gbopt
from gbopt._quantize import _code_position, _decode, _dequantize, _quantize, code_book

COLLECTIVE = re.compile(
    r"\s(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)


def _tree(rng, shapes, dtype=np.float32):
    return {k: jnp.asarray(rng.normal(size=s), dtype) for k, s in shapes.items()}


def _nearest(y, book):
    """NumPy model: the index of the nearest code, ties to the larger one."""
    d = np.abs(y[..., None].astype(np.float64) - book.astype(np.float64))
    return len(book) - 1 - np.argmin(d[..., ::-1], axis=-1)


# ---------------------------------------------------------------------------------------
# Code books and rounding


def test_code_books_have_their_documented_shape():
    for signed in (True, False):
        book = code_book(8, signed)
        assert book.dtype == np.float32 and book.shape == (256,)
        assert np.all(np.diff(book) > 0) and book[-1] == 1 and 0 in book
        assert (-1 < book[0] < -0.99) if signed else (book[0] == 0)  # no -1 code
    assert code_book(4, True).shape == (16,) and 0 in code_book(4, True)
    np.testing.assert_array_equal(code_book(4, False), np.arange(1, 17) / 16)
    assert not code_book(8, True).flags.writeable


@pytest.mark.slow
def test_code_books_equal_bitsandbytes_and_torchao():
    functional = pytest.importorskip("bitsandbytes.functional")
    for signed in (True, False):
        ref = functional.create_dynamic_map(signed=signed).numpy()
        np.testing.assert_array_equal(code_book(8, signed), ref)
    subclass_4bit = pytest.importorskip("torchao.optim.subclass_4bit")
    np.testing.assert_array_equal(
        code_book(4, True), np.asarray(subclass_4bit.get_qmap_signed(), np.float32)
    )
    np.testing.assert_array_equal(
        code_book(4, False), np.asarray(subclass_4bit.get_qmap_unsigned(), np.float32)
    )


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_nearest_and_the_error_is_half_an_interval(bits, signed):
    rng = np.random.default_rng(bits + signed)
    # values over six decades and a ragged last block (100 = 64 + 36)
    x = rng.normal(size=(3, 100)) * 10.0 ** rng.uniform(-6, 0, size=(3, 100))
    x = np.abs(x) if not signed else x
    x = x.astype(np.float32)
    q = _quantize(jnp.asarray(x), bits, signed, 64, jnp.float32)
    assert q.codes.dtype == jnp.uint8
    assert q.codes.shape == ((3, 100) if bits == 8 else (3, 50))
    assert q.scale.shape == (3, 2)
    blocks = [x[:, :64], x[:, 64:]]
    scale = np.stack([np.abs(b).max(-1) for b in blocks], -1)
    np.testing.assert_array_equal(q.scale, scale)
    book = code_book(bits, signed)
    y = np.concatenate([b / s[:, None] for b, s in zip(blocks, scale.T, strict=True)], -1)
    codes = _nearest(y, book)
    packed = np.asarray(q.codes)
    if bits == 4:
        packed = np.stack([packed >> 4, packed & 15], -1).reshape(3, 100)
    np.testing.assert_array_equal(packed, codes)
    back = np.asarray(_dequantize(q, jax.ShapeDtypeStruct(x.shape, jnp.float32), bits, signed, 64))
    per_elem_scale = np.repeat(scale, 64, axis=-1)[:, :100]
    gaps = np.diff(book)
    half = np.maximum(
        gaps[np.clip(codes - 1, 0, len(gaps) - 1)], gaps[np.clip(codes, 0, len(gaps) - 1)]
    )
    inside = (y >= book[0]) & (y <= book[-1])
    err = np.abs(back - x)[inside]
    assert np.all(err <= (half / 2 * per_elem_scale * (1 + 1e-6) + 1e-30)[inside])


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (4, True), (4, False)])
def test_every_code_decodes_to_the_code_books_value_bit_for_bit(bits, signed):
    # the element-wise decoding rebuilds bitsandbytes' float32 map without a table
    codes = jnp.arange(2**bits, dtype=jnp.uint8)
    book = code_book(bits, signed).view(np.int32)
    for decode in (_decode, jax.jit(_decode, static_argnums=(1, 2))):
        np.testing.assert_array_equal(np.asarray(decode(codes, bits, signed)).view(np.int32), book)


@pytest.mark.parametrize("n, b", [(40, 64), (300, 256), (130, 64), (1024, 512), (96, 32)])
def test_block_scales_of_whole_and_ragged_blocks(n, b):
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(3, n)) * 10.0 ** rng.uniform(-3, 3, size=(3, n))).astype(np.float32)
    x[0, -1] = -1e4  # a negative number as a block's largest magnitude
    q = _quantize(jnp.asarray(x), 8, True, b, jnp.float32)
    blocks = [x[:, i : i + b] for i in range(0, n, b)]
    np.testing.assert_array_equal(q.scale, np.stack([np.abs(k).max(-1) for k in blocks], -1))
    back = _dequantize(q, jax.ShapeDtypeStruct(x.shape, jnp.float32), 8, True, b)
    scale = np.repeat(np.asarray(q.scale), b, axis=-1)[:, :n]
    expected = code_book(8, True)[np.asarray(q.codes)] * scale
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_stochastic_rounding_picks_a_neighbour_and_is_right_on_average(bits, signed):
    book = code_book(bits, signed).astype(np.float64)
    rng = np.random.default_rng(10 + bits + signed)
    # each row: one value repeated over 4,096 positions (its own scale set by a 1 at the end)
    inner = book[(book > book[0]) & (book < 1)]
    values = rng.uniform(inner[:-1], inner[1:])[:: max(1, len(inner) // 24)]
    if 0 in book:  # between 0 and the first positive value
        values = np.concatenate([values, book[book > 0][:1] * [0.3, 0.7]])
    values = values if not signed else values * rng.choice([-1, 1], size=values.shape)
    x = np.repeat(values[:, None], 4097, axis=1).astype(np.float32)
    x[:, -1] = 1.0
    q = _quantize(jnp.asarray(x), bits, signed, 8192, jnp.float32, stochastic=True)
    like = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    back = np.asarray(_dequantize(q, like, bits, signed, 8192), np.float64)[:, :-1]
    lower = book[np.clip(np.searchsorted(book, x[:, :1], "right") - 1, 0, None)]
    upper = book[np.clip(np.searchsorted(book, x[:, :1], "left"), None, len(book) - 1)]
    assert np.all((back == lower) | (back == upper))  # one of the two codes around it
    gap = upper[:, 0] - lower[:, 0]
    # the mean is the value, within 4 standard errors of 4,096 draws (and not the nearest)
    err = np.abs(back.mean(axis=1) - x[:, 0])
    bad = err > 4 * gap / 2 / np.sqrt(4096) + 1e-7
    assert not bad.any(), (x[bad, 0], lower[bad, 0], upper[bad, 0], back.mean(axis=1)[bad])
    again = _quantize(jnp.asarray(x), bits, signed, 8192, jnp.float32, stochastic=True)
    np.testing.assert_array_equal(q.codes, again.codes)  # deterministic: no key


@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (4, True), (4, False)])
def test_code_positions_count_code_steps_exactly_at_every_code(bits, signed):
    """Stochastic rounding takes the floor of position + noise: at each non-negative code
    value the position is that code's index above zero's (4 bits unsigned: above 0)."""
    book = code_book(bits, signed)
    values = book[book >= 0]
    zero = 0 if signed or bits == 8 else -1  # the 4-bit unsigned map starts at 1/16
    expected = np.arange(len(values)) - zero
    got = np.asarray(_code_position(jnp.asarray(values), bits, signed), np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    # linear between codes: the midpoint of two codes is halfway
    mids = (values[:-1].astype(np.float64) + values[1:]) / 2
    got = np.asarray(_code_position(jnp.asarray(mids, jnp.float32), bits, signed), np.float64)
    np.testing.assert_allclose(got, expected[:-1] + 0.5, rtol=0, atol=1e-4)


def test_an_all_zero_block_comes_back_zero():
    for bits in (8, 4):
        q = _quantize(jnp.zeros((2, 8)), bits, False, 8, jnp.float32)
        back = _dequantize(q, jax.ShapeDtypeStruct((2, 8), jnp.float32), bits, False, 8)
        np.testing.assert_array_equal(back, 0.0)


# ---------------------------------------------------------------------------------------
# The wrapper


def test_state_layout_small_leaves_and_counts_stay():
    params = {"w": jnp.ones((16, 512)), "b": jnp.ones((512,)), "s": jnp.ones(())}
    tx = gbopt.quantize_state(optax.adam(1e-3))
    state = tx.init(params)
    adam = state.inner_state[0]
    assert isinstance(state, gbopt.QuantizeStateState)
    assert adam.count.dtype == jnp.int32
    for field in (adam.mu, adam.nu):
        assert isinstance(field["w"], gbopt.QuantizedArray)
        assert field["w"].codes.shape == (16, 512) and field["w"].scale.shape == (16, 2)
        assert field["b"].dtype == jnp.float32 and field["b"].shape == (512,)  # < 4096
        assert field["s"].shape == ()
    # first moments: the signed map (0 is code 127); second moments: the unsigned one (code 0)
    assert np.all(np.asarray(adam.mu["w"].codes) == 127)
    assert np.all(np.asarray(adam.nu["w"].codes) == 0)
    flipped = gbopt.quantize_state(optax.adam(1e-3), unsigned=()).init(params)
    assert np.all(np.asarray(flipped.inner_state[0].nu["w"].codes) == 127)
    four = gbopt.quantize_state(optax.adam(1e-3), bits=4, block_size=128).init(params)
    assert four.inner_state[0].mu["w"].codes.shape == (16, 256)
    assert four.inner_state[0].mu["w"].scale.shape == (16, 4)


def test_the_field_name_is_the_states_not_the_parameters():
    # parameters whose own keys are state field names ("nu", "mu") do not confuse the rule
    params = {"nu": jnp.ones((8, 64)), "mu": {"x": jnp.ones((8, 64))}}
    state = gbopt.quantize_state(optax.adam(1e-3), min_size=0, block_size=64).init(params)
    adam = state.inner_state[0]
    assert np.all(np.asarray(adam.mu["nu"].codes) == 127)  # signed: a first moment
    assert np.all(np.asarray(adam.nu["mu"]["x"].codes) == 0)  # unsigned: a second moment


@pytest.mark.slow
def test_quantized_adam_matches_float32_adam_closely():
    rng = np.random.default_rng(0)
    target = _tree(rng, {"w": (32, 256)})

    def loss(p):
        return jnp.mean((p["w"] - target["w"]) ** 2 * (1 + jnp.arange(256) / 64))

    finals = {}
    for name, tx in {
        "float32": gbopt.adam(5e-2),
        "8-bit": gbopt.quantize_state(gbopt.adam(5e-2)),
        "4-bit": gbopt.quantize_state(gbopt.adam(5e-2), bits=4, block_size=128),
    }.items():
        params = {"w": jnp.zeros((32, 256))}
        state = tx.init(params)

        @jax.jit
        def step(params, state, tx=tx):
            g = jax.grad(loss)(params)
            u, state = tx.update(g, state, params)
            return gbopt.apply_updates(params, u), state

        for _ in range(200):
            params, state = step(params, state)
        finals[name] = float(loss(params))
    start = float(loss({"w": jnp.zeros((32, 256))}))
    assert finals["float32"] < 0.05 * start
    assert abs(finals["8-bit"] - finals["float32"]) <= 0.01 * start
    assert abs(finals["4-bit"] - finals["float32"]) <= 0.03 * start


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_runs_quantized_under_jit(name, bits):
    rng = np.random.default_rng(1)
    params = _tree(rng, {"w": (8, 64), "b": (3,)})
    tx = gbopt.quantize_state(OPTIMIZERS[name](), bits=bits, block_size=32, min_size=64)
    state = tx.init(params)
    step = jax.jit(tx.update)
    structure = jax.tree.structure(state)
    for _ in range(3):
        g = _tree(rng, {"w": (8, 64), "b": (3,)})
        u, state = step(g, state, params)
        params = gbopt.apply_updates(params, u)
    assert jax.tree.structure(state) == structure
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(params))
    codes = [x for x in jax.tree.leaves(state) if x.dtype == jnp.uint8]
    assert codes or name in ("sgd", "gd")


@pytest.mark.slow
def test_a_bfloat16_statistic_comes_back_in_bfloat16():
    # optax keeps mu in mu_dtype: the inner update sees the dtype it built
    seen = []
    inner = optax.adam(1e-3, mu_dtype=jnp.bfloat16)

    def update(updates, state, params=None):
        seen.append(state[0].mu["w"].dtype)
        return inner.update(updates, state, params)

    tx = gbopt.quantize_state(optax.GradientTransformation(inner.init, update))
    params = {"w": jnp.ones((4, 1024))}
    state = tx.init(params)
    tx.update(params, state, params)
    assert seen == [jnp.bfloat16]


@pytest.mark.slow
def test_vmap_equals_one_by_one():
    rng = np.random.default_rng(2)
    batch = _tree(rng, {"w": (3, 4, 128)})
    grads = _tree(rng, {"w": (3, 4, 128)})
    tx = gbopt.quantize_state(gbopt.adam(1e-2), block_size=64, min_size=0)
    state = jax.vmap(tx.init)(batch)
    u, state = jax.vmap(tx.update)(grads, state, batch)
    u, state = jax.vmap(tx.update)(grads, state, batch)
    for i in range(3):
        p_i = {"w": batch["w"][i]}
        g_i = {"w": grads["w"][i]}
        s_i = tx.init(p_i)
        u_i, s_i = tx.update(g_i, s_i, p_i)
        u_i, s_i = tx.update(g_i, s_i, p_i)
        np.testing.assert_array_equal(u["w"][i], u_i["w"])
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(s_i), strict=True):
            np.testing.assert_array_equal(a[i], b)


def _mesh(axis_type):
    return jax.make_mesh((4, 2), ("x", "y"), axis_types=(axis_type, axis_type))


SPECS = {
    "w": ((16, 1024), P("x", "y")),  # 512 per shard along the last axis: blocks of 256
    "v": ((8, 768), P(None, "x")),  # 192 per shard: blocks shrink to 64
    "b": ((4096,), P(("x", "y"))),  # 512 per shard
}


@pytest.mark.slow
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=lambda a: a.name)
def test_state_follows_the_sharding_and_blocks_stay_within_a_shard(axis_type):
    mesh = _mesh(axis_type)
    rng = np.random.default_rng(3)
    host = {k: rng.normal(size=s).astype(np.float32) for k, (s, _) in SPECS.items()}
    shard = {k: NamedSharding(mesh, spec) for k, (_, spec) in SPECS.items()}
    params = {k: jax.device_put(v, shard[k]) for k, v in host.items()}
    grads = {k: jax.device_put(v * 0.5, shard[k]) for k, v in host.items()}
    tx = gbopt.quantize_state(gbopt.adam(1e-2))
    state = tx.init(params)
    mu = state.inner_state.inner_state[0].numerator[0].mu
    assert mu["v"].scale.shape == (8, 768 // 64)
    assert mu["w"].scale.shape == (16, 1024 // 256)
    if axis_type == AxisType.Explicit:
        with jax.set_mesh(mesh):
            jitted = jax.jit(tx.init)(params)
        assert jax.tree.map(np.shape, jitted) == jax.tree.map(np.shape, state)
    for k in SPECS:
        assert mu[k].codes.sharding.is_equivalent_to(shard[k], 2 - (k == "b"))
        assert not mu[k].scale.sharding.is_fully_replicated
    step = jax.jit(tx.update)
    hlo = step.lower(grads, state, params).compile().as_text()
    assert not COLLECTIVE.search(hlo), COLLECTIVE.search(hlo)
    u, new_state = step(grads, state, params)
    for k in SPECS:
        assert u[k].sharding.is_equivalent_to(shard[k], u[k].ndim)
    # the same state on one device gives the same result (the layout is in the shapes)
    local = jax.tree.map(np.asarray, state)
    u1, s1 = jax.jit(tx.update)(host_g := jax.tree.map(np.asarray, grads), local, host)
    del host_g
    for a, b in zip(jax.tree.leaves((u, new_state)), jax.tree.leaves((u1, s1)), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), 0, 0)


@pytest.mark.slow
def test_checkpoint_round_trip_is_bit_for_bit():
    serialization = pytest.importorskip("flax.serialization")
    rng = np.random.default_rng(4)
    params = _tree(rng, {"w": (8, 1024), "b": (7,)})
    tx = gbopt.quantize_state(gbopt.adam(1e-2), bits=4, block_size=128)
    step = jax.jit(tx.update)
    state = tx.init(params)
    grads = [_tree(rng, {"w": (8, 1024), "b": (7,)}) for _ in range(4)]
    for g in grads[:2]:
        _, state = step(g, state, params)
    blob = serialization.to_bytes(state)
    raw = serialization.msgpack_restore(blob)
    restored = gbopt.restore_state(tx.init(params), raw)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    for g in grads[2:]:
        u_a, state = step(g, state, params)
        u_b, restored = step(g, restored, params)
        np.testing.assert_array_equal(u_a["w"], u_b["w"])
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# Parity with torchao's 8-bit and 4-bit AdamW (same map, block size and minimum size)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_parity_with_torchao_adamw_step_by_step(bits, monkeypatch):
    torch = pytest.importorskip("torch")
    torchao_optim = pytest.importorskip("torchao.optim")
    # torchao compiles its step with torch.compile; on CPU without a compiler, run it eagerly
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    cls, block = (torchao_optim.AdamW8bit, 256) if bits == 8 else (torchao_optim.AdamW4bit, 128)
    rng = np.random.default_rng(5)
    shape = (16, 512)
    w0 = rng.normal(size=shape).astype(np.float32)
    p = torch.nn.Parameter(torch.tensor(w0))
    lr, wd = 1e-2, 1e-2
    opt = cls([p], lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd, block_size=block)
    tx = gbopt.quantize_state(
        optax.adamw(lr, b1=0.9, b2=0.99, eps=1e-8, weight_decay=wd),
        bits=bits,
        block_size=block,
        rounding="nearest",  # torchao's (stochastic rounding is tested on its own)
    )
    state = tx.init({"w": jnp.asarray(w0)})

    def theirs(x):
        codes = x.codes.numpy().reshape(shape[0], -1)
        # torchao floors a zero block's scale at 1e-12; both read it back as 0
        return gbopt.QuantizedArray(
            jnp.asarray(codes), jnp.asarray(x.scale.numpy().reshape(shape[0], -1))
        )

    for t in range(6):
        g = (rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 0, size=shape)).astype(np.float32)
        if t:  # start from torchao's state: each step is compared on its own
            s = opt.state[p]
            adam = state.inner_state[0]._replace(
                count=jnp.asarray(t, jnp.int32),
                mu={"w": theirs(s["exp_avg"])},
                nu={"w": theirs(s["exp_avg_sq"])},
            )
            state = gbopt.QuantizeStateState((adam, *state.inner_state[1:]))
        before = p.detach().clone().numpy()
        p.grad = torch.tensor(g)
        opt.step()
        u, state = tx.update({"w": jnp.asarray(g)}, state, {"w": jnp.asarray(before)})
        ours = state.inner_state[0]
        s = opt.state[p]
        for mine, ref in ((ours.mu["w"], s["exp_avg"]), (ours.nu["w"], s["exp_avg_sq"])):
            ref_codes = ref.codes.numpy().reshape(shape[0], -1).astype(int)
            # the same codes, but for a value on a tie that rounding moved by one code
            diff = np.abs(np.asarray(mine.codes).astype(int) - ref_codes)
            if bits == 4:
                diff = np.maximum(diff >> 4, diff & 15)
            assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3
            np.testing.assert_allclose(
                mine.scale, ref.scale.numpy().reshape(shape[0], -1), rtol=1e-6
            )
        after = p.detach().numpy()
        # the parameters agree to float32 rounding of the parameter itself
        np.testing.assert_allclose(before + np.asarray(u["w"]), after, rtol=0, atol=2.4e-7)


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"bits": 3}, ValueError, "`bits` must be 8 or 4"),
        ({"bits": 16}, ValueError, "`bits` must be 8 or 4"),
        ({"bits": True}, ValueError, "`bits`"),
        ({"block_size": 100}, ValueError, "`block_size` must be a positive power of two"),
        ({"block_size": 0}, ValueError, "`block_size`"),
        ({"block_size": -256}, ValueError, "`block_size`"),
        ({"block_size": 2.0}, TypeError, "`block_size` must be an int"),
        ({"bits": 4, "block_size": 1}, ValueError, "`block_size` must be at least 2"),
        ({"min_size": -1}, ValueError, "`min_size`"),
        ({"scale_dtype": jnp.int8}, TypeError, "`scale_dtype` must be a floating dtype"),
        ({"scale_dtype": "banana"}, TypeError, "`scale_dtype`"),
        ({"unsigned": "nu"}, TypeError, "`unsigned` must be a collection"),
        ({"rounding": "up"}, ValueError, "`rounding` must be 'stochastic' or 'nearest'"),
        ({"rounding": None}, ValueError, "`rounding`"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        gbopt.quantize_state(gbopt.adam(1e-3), **kwargs)


def test_not_a_transform_is_refused():
    with pytest.raises(TypeError, match="gradient transformation"):
        gbopt.quantize_state(gbopt.adam)


def test_a_foreign_state_is_refused():
    tx = gbopt.quantize_state(gbopt.adam(1e-3))
    params = {"w": jnp.ones((4, 4))}
    with pytest.raises(ValueError, match="QuantizeStateState"):
        tx.update(params, gbopt.adam(1e-3).init(params), params)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(
    "shape",
    [(8, 512), (3, 3, 64, 64), (64, 100), (300, 77)],
    ids=["whole blocks", "conv kernel: rows of 64", "rows of 100", "rows of 77"],
)
def test_the_compiled_step_keeps_no_float32_copy_of_a_statistic(shape, bits):
    """The jitted, donated step's temporaries hold at most a byte per number, no float32.

    At 8 bits they are a copy of the codes (XLA copies donated codes before overwriting
    them), at 4 bits the codes unpacked to a byte each; plus the scales: about one byte
    per parameter and statistic, far under one float32 statistic (4). Rows shorter than
    a block are one block each and go the whole-block way (before, a conv kernel's rows
    of 64 left two float32 statistics, 16 bytes per parameter, in the temporaries).
    """
    params = {"w": jnp.ones(shape, jnp.float32)}
    n = params["w"].size
    tx = gbopt.quantize_state(gbopt.adam(1e-3), bits=bits, block_size=256 if bits == 8 else 128)
    state = tx.init(params)
    assert isinstance(state.inner_state.inner_state[0].numerator[0].mu["w"], gbopt.QuantizedArray)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
    codes_and_slack = (2 + 0.5) * n  # a byte per number of two statistics, the scales
    assert compiled.memory_analysis().temp_size_in_bytes < codes_and_slack
