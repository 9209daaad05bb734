"""Matrix primitives and gbopt.muon / shampoo / soap: references, batching, bad input, sharding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gbopt
from gbopt import _matrix
from gbopt.demo import charlm

ALL_2D = lambda path, x: x.ndim == 2  # noqa: E731  (optax's rule)


def _tree(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"a": (6, 4), "b": (6, 4), "c": (3, 8), "d": (5, 5), "bias": (4,)}
    return {k: jnp.asarray(rng.standard_normal(s), dtype) for k, s in shapes.items()}


def _grads(params, k):
    return jax.tree.map(lambda x: jnp.sin(3.0 * x + k) + 0.1 * x * x, params)


# ----------------------------------------------------------------------------------------
# Muon against optax.contrib.muon (float64, 100 steps).


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"weight_decay": 0.01, "nesterov": False, "beta": 0.9},
        {"consistent_rms": 0.2, "adam_weight_decay": 0.1, "adam_learning_rate": 3e-3},
        {"ns_coeffs": ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377)), "ns_steps": 2},
    ],
    ids=["default", "decay-no-nesterov", "consistent-rms-adam", "per-step-coeffs"],
)
def test_muon_equals_optax_contrib_muon_float64(kwargs):
    with jax.enable_x64(True):
        params = _tree(jnp.float64)
        ours = gbopt.muon(0.02, matrix_rule=ALL_2D, **kwargs)
        theirs = optax.contrib.muon(0.02, **kwargs)

        def run(tx):
            def step(p, s, k):
                u, s = tx.update(_grads(p, k), s, p)
                return optax.apply_updates(p, u), s

            step = jax.jit(step)
            p, s, path = params, tx.init(params), []
            for k in range(100):
                p, s = step(p, s, float(k))
                path.append(p)
            return path

        worst = 0.0
        for a, b in zip(run(ours), run(theirs), strict=True):
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
                worst = max(worst, float(jnp.max(jnp.abs(x - y))))
        assert worst <= 1e-10


# ----------------------------------------------------------------------------------------
# Muon against Keller Jordan's PyTorch rule (float32), written here from its description:
# momentum.lerp_(g, 1 - beta); update = g.lerp(momentum, beta); Newton-Schulz on the wide
# orientation with X / (||X|| + 1e-7); times max(1, rows / cols) ** 0.5; p *= 1 - lr wd;
# p -= lr update. (The reference runs Newton-Schulz in bfloat16; here in float32.)


def _torch_muon_step(p, g, buf, lr, wd, beta=0.95, steps=5):
    a, b, c = 3.4445, -4.7750, 2.0315
    buf.lerp_(g, 1 - beta)
    u = g.lerp(buf, beta)
    x = u
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        am = x @ x.mT
        bm = b * am + c * am @ am
        x = a * x + bm @ x
    if tall:
        x = x.mT
    x = x * max(1, g.size(-2) / g.size(-1)) ** 0.5
    p.mul_(1 - lr * wd)
    p.add_(x, alpha=-lr)


def test_muon_equals_pytorch_muon_float32():
    params = {k: v for k, v in _tree(jnp.float32).items() if v.ndim == 2}
    lr, wd = 0.02, 0.01
    tx = gbopt.muon(lr, eps=1e-7, debias=False, weight_decay=wd, matrix_rule=ALL_2D)
    state = tx.init(params)
    # torch's nn.Linear layout is (out, in): the transpose of JAX's (in, out)
    tp = {k: torch.tensor(np.asarray(v).T.copy()) for k, v in params.items()}
    bufs = {k: torch.zeros_like(v) for k, v in tp.items()}
    step = jax.jit(tx.update)
    for k in range(30):
        grads = _grads(params, float(k))
        updates, state = step(grads, state, params)
        params = gbopt.apply_updates(params, updates)
        for name, p in tp.items():
            g = torch.tensor(np.asarray(_grads({"x": jnp.asarray(p.numpy().T)}, float(k))["x"]).T)
            _torch_muon_step(p, g.contiguous(), bufs[name], lr, wd)
    for name, p in tp.items():
        np.testing.assert_allclose(np.asarray(params[name]), p.numpy().T, rtol=0, atol=2e-5)


# ----------------------------------------------------------------------------------------
# Primitives.


def test_newton_schulz_orthogonalises_and_commutes_with_transpose():
    x = jax.random.normal(jax.random.key(0), (3, 16, 40))
    o = _matrix.newton_schulz(x)
    s = jnp.linalg.svd(o, compute_uv=False)
    assert 0.6 < float(s.min()) and float(s.max()) < 1.25
    ot = _matrix.newton_schulz(jnp.swapaxes(x, -1, -2))
    np.testing.assert_allclose(ot, jnp.swapaxes(o, -1, -2), atol=1e-5)
    # batched equals one at a time
    for i in range(3):
        np.testing.assert_allclose(o[i], _matrix.newton_schulz(x[i]), atol=1e-5)
    # exact polar factor in the limit of many classic cubic steps
    with jax.enable_x64(True):
        y = jax.random.normal(jax.random.key(1), (6, 4), jnp.float64)
        polar = _matrix.newton_schulz(y, (1.5, -0.5, 0.0), steps=60)
        u, _, vt = np.linalg.svd(np.asarray(y), full_matrices=False)
        np.testing.assert_allclose(polar, u @ vt, atol=1e-10)


def test_newton_schulz_is_a_rolled_loop():
    text = str(jax.make_jaxpr(lambda x: _matrix.newton_schulz(x, steps=50))(jnp.ones((4, 8))))
    assert len(re.findall(r"\b(?:scan|while)\[", text)) == 1
    assert text.count("dot_general") <= 4  # not 150: the loop body appears once


def test_orthogonalize_runs_one_loop_per_shape():
    params = _tree(jnp.float32)
    del params["bias"]
    params["e"] = jnp.ones((6, 4))
    tx = gbopt.orthogonalize()
    jaxpr = str(jax.make_jaxpr(lambda u: tx.update(u, tx.init(params))[0])(params))
    assert len(re.findall(r"\b(?:scan|while)\[", jaxpr)) == 3  # shapes (6, 4) x3, (3, 8), (5, 5)
    out, _ = tx.update(params, tx.init(params))
    for k, v in params.items():
        np.testing.assert_allclose(out[k], _matrix.newton_schulz(v), atol=1e-6)


def test_kronecker_factors_and_inverse_root():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        g = rng.standard_normal((4, 6))
        left, right = _matrix.kronecker_factors(np.eye(4), np.eye(6), g, 0.5, 2.0)
        np.testing.assert_allclose(left, 0.5 * np.eye(4) + 2 * g @ g.T)
        np.testing.assert_allclose(right, 0.5 * np.eye(6) + 2 * g.T @ g)
        root = _matrix.inverse_pth_root(jnp.asarray(left), 4, 1e-6, relative=False)
        np.testing.assert_allclose(
            np.linalg.matrix_power(np.asarray(root), 4) @ (left + 1e-6 * np.eye(4)),
            np.eye(4),
            atol=1e-9,
        )


def test_eigenbasis_and_refinement():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        a = rng.standard_normal((5, 5))
        m = jnp.asarray(a @ a.T)
        q = _matrix.eigenbasis(m)
        lam = np.diag(np.asarray(q.T @ m @ q))
        assert np.all(np.diff(lam) <= 0)  # decreasing
        np.testing.assert_allclose(q.T @ m @ q, np.diag(lam), atol=1e-10)
        # a shuffled basis is sorted back, and one refinement keeps an exact basis exact
        shuffled = q[:, ::-1]
        q2, perm = _matrix.refine_eigenbasis(m, shuffled)
        np.testing.assert_array_equal(perm, np.arange(5)[::-1])
        np.testing.assert_allclose(np.abs(q2), np.abs(q), atol=1e-10)


def test_lapack_kernels_see_one_matrix_at_a_time_on_cpu():
    # jaxlib's CPU eigh/qr split a batch over the intra-op pool and wait on it; two at once
    # deadlocked SOAP's step on 2 cores. The batch is now a lax.map of single matrices.
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    m = jnp.asarray(a @ np.swapaxes(a, -1, -2))
    fns = {
        "eigenbasis": (lambda m: _matrix.eigenbasis(m), {"eigh"}),
        "inverse_pth_root": (lambda m: _matrix.inverse_pth_root(m, 4, 1e-6), {"eigh"}),
        "refine_eigenbasis": (
            lambda m: _matrix.refine_eigenbasis(m, _matrix.eigenbasis(m))[0],
            {"eigh", "qr"},
        ),
    }
    for name, (fn, kernels) in fns.items():
        jaxpr = str(jax.make_jaxpr(fn)(m))
        calls = re.findall(r"\w+:f32\[([\d,]+)\][^=\n]*= (eigh|qr)\[", jaxpr)
        assert {k for _, k in calls} == kernels, (name, calls)
        assert all(shape == "6,6" for shape, _ in calls), (name, calls)
        batched = np.asarray(fn(m))
        for i in range(2):
            for j in range(3):
                np.testing.assert_allclose(batched[i, j], fn(m[i, j]), rtol=1e-5, atol=1e-5)


def test_project_roundtrip_and_blocks():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        ql, _ = np.linalg.qr(rng.standard_normal((4, 4)))
        qr, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        g = rng.standard_normal((4, 6))
        p = _matrix.project(g, ql, qr)
        np.testing.assert_allclose(p, ql.T @ g @ qr)
        np.testing.assert_allclose(_matrix.project_back(p, ql, qr), g, atol=1e-12)
        np.testing.assert_allclose(_matrix.project(g, None, qr), g @ qr)
    x = jnp.arange(70.0).reshape(7, 10)
    slices = _matrix.block_slices(x.shape, 4)
    assert [b.shape for b in _matrix.split_blocks(x, slices)] == [
        (4, 4),
        (4, 4),
        (4, 2),
        (3, 4),
        (3, 4),
        (3, 2),
    ]
    np.testing.assert_array_equal(_matrix.merge_blocks(_matrix.split_blocks(x, slices), slices), x)


def test_graft_takes_the_norm_of_the_magnitude():
    params = _tree(jnp.float32)
    tx = gbopt.graft(gbopt.scale(3.0), gbopt.orthogonalize())
    del params["bias"]
    out, _ = tx.update(params, tx.init(params))
    for k, v in params.items():
        np.testing.assert_allclose(jnp.linalg.norm(out[k]), 3 * jnp.linalg.norm(v), rtol=1e-5)
        direction = _matrix.newton_schulz(v)
        cos = jnp.sum(out[k] * direction) / (jnp.linalg.norm(out[k]) * jnp.linalg.norm(direction))
        assert float(cos) > 0.9999


# ----------------------------------------------------------------------------------------
# The partition rule.


def test_default_rule_on_the_language_model():
    params = charlm.init_params(jax.random.key(0), charlm.TINY)
    labels = gbopt.label_by_path(_matrix.matrix_rule)(params)
    flat = {gbopt._tree.path_str(p): v for p, v in jax.tree_util.tree_leaves_with_path(labels)}
    matrices = sorted(k for k, v in flat.items() if v)
    assert matrices == sorted(
        f"['blocks'][0]['{a}']['{m}']"
        for a, m in [("attn", "wq"), ("attn", "wk"), ("attn", "wv"), ("attn", "wo")]
        + [("mlp", "w_in"), ("mlp", "w_out")]
    )
    # override by path: the head goes to the matrix rule too
    rule = lambda path, x: _matrix.matrix_rule(path, x) or path[-1] == "head"  # noqa: E731
    tx = gbopt.muon(0.02, matrix_rule=rule)
    state = tx.init(params)
    assert state.inner_states["matrix"] is not None  # builds
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    # orthogonalised head: its singular values are about one, not ||ones||
    s = jnp.linalg.svd(updates["head"], compute_uv=False)
    assert float(s.max()) < 0.1


# ----------------------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize(
    "factory", [gbopt.orthogonalize, gbopt.scale_by_shampoo, gbopt.scale_by_soap]
)
def test_one_dimensional_leaf_to_a_matrix_rule_names_its_path(factory):
    params = {"layer": {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}}
    tx = factory()
    with pytest.raises(ValueError, match=r"`\['layer'\]\['b'\]` has shape \(4,\).*matrix_rule"):
        state = tx.init(params)
        tx.update(params, state, params)


def test_muon_rule_sending_a_vector_is_an_error():
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
    tx = gbopt.muon(0.1, matrix_rule=lambda path, x: True)
    with pytest.raises(ValueError, match=r"`\['b'\]` has shape \(4,\)"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("name", ["muon", "shampoo", "soap"])
def test_matrices_with_a_zero_dimension(name):
    params = {"w": jnp.ones((0, 4)), "v": jnp.ones((3, 0)), "u": jnp.ones((3, 4))}
    tx = getattr(gbopt, name)(0.1, matrix_rule=ALL_2D)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(params, state, params)
        assert updates["w"].shape == (0, 4) and updates["v"].shape == (3, 0)
        assert bool(jnp.all(jnp.isfinite(updates["u"])))


def test_non_finite_factors_keep_the_previous_root_or_basis():
    bad = jnp.full((3, 3), jnp.nan)
    prev = 2.0 * jnp.eye(3)
    np.testing.assert_array_equal(_matrix.inverse_pth_root(bad, 4, 1e-6, previous=prev), prev)
    np.testing.assert_array_equal(_matrix.inverse_pth_root(bad, 4, 1e-6), jnp.eye(3))
    np.testing.assert_array_equal(_matrix.eigenbasis(bad, previous=prev), prev)
    q, perm = _matrix.refine_eigenbasis(bad, prev)
    np.testing.assert_array_equal(q, prev)
    np.testing.assert_array_equal(perm, jnp.arange(3))
    # batched: only the failing matrix falls back
    good = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
    roots = _matrix.inverse_pth_root(jnp.stack([bad, good]), 2, 0.0, relative=False)
    np.testing.assert_array_equal(roots[0], jnp.eye(3))
    np.testing.assert_allclose(jnp.diag(roots[1]), jnp.array([1.0, 2.0, 4.0]) ** -0.5, rtol=1e-6)


def test_shampoo_with_a_corrupted_factor_applies_no_nan():
    params = {"w": jnp.ones((4, 4)) + jnp.eye(4)}
    tx = gbopt.scale_by_shampoo(start_preconditioning_step=0)
    state = tx.init(params)
    _, state = tx.update(params, state, params)
    state = gbopt.state_set(state, left={"w": (jnp.full((4, 4), jnp.inf),)})
    updates, state = tx.update(params, state, params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))
    assert bool(jnp.all(jnp.isfinite(gbopt.state_get(state, "left_root")["w"][0])))


@pytest.mark.parametrize("beta2", [0.999, 1.0])
def test_shampoo_adam_graft_is_rmsprop_bias_corrected(beta2):
    # NumPy float64: before t0 the step is the bias-corrected RMSProp direction with
    # Nesterov momentum; after it, with beta1 = 0 and no epsilon, the grafted step is
    # RMSProp grafting's times sqrt(1 - beta2^t) (sqrt(t) for sums: the mean instead of
    # the sum); RMSProp grafting's first step is 1 / sqrt(1 - beta2) = 31.6 times Adam's.
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3))
    gs = [rng.standard_normal((5, 3)) * 1e-3 for _ in range(6)]
    with jax.enable_x64(True):
        kw = dict(beta2=beta2, diagonal_epsilon=0.0, block_size=0)
        warm = gbopt.scale_by_shampoo(start_preconditioning_step=100, graft_type="adam", **kw)
        state = warm.init(jnp.asarray(w))
        v, m = np.zeros_like(w), np.zeros_like(w)
        for t, g in enumerate(gs, 1):
            out, state = warm.update(jnp.asarray(g), state, jnp.asarray(w))
            v = (beta2 * v + (1 - beta2) * g**2) if beta2 < 1 else v + g**2
            d = g / np.sqrt(v / ((1 - beta2**t) if beta2 < 1 else t))
            m = 0.9 * m + d
            np.testing.assert_allclose(np.asarray(out), d + 0.9 * m, rtol=1e-12)
            if t == 1:  # Adam-sized: 1 + beta1 per entry, whatever the gradient's scale
                np.testing.assert_allclose(np.abs(np.asarray(out)), 1.9, rtol=1e-12)
        both = [
            gbopt.scale_by_shampoo(beta1=0.0, start_preconditioning_step=0, graft_type=k, **kw)
            for k in ("adam", "rmsprop")
        ]
        states = [tx.init(jnp.asarray(w)) for tx in both]
        for t, g in enumerate(gs, 1):
            a, states[0] = both[0].update(jnp.asarray(g), states[0], jnp.asarray(w))
            r, states[1] = both[1].update(jnp.asarray(g), states[1], jnp.asarray(w))
            c = (1 - beta2**t) if beta2 < 1 else t
            np.testing.assert_allclose(np.asarray(a), np.sqrt(c) * np.asarray(r), rtol=1e-10)


def test_bad_hyperparameters_name_the_argument():
    with pytest.raises(ValueError, match="graft_type"):
        gbopt.scale_by_shampoo(graft_type="adamw")
    with pytest.raises(ValueError, match="ns_steps"):
        gbopt.orthogonalize(ns_steps=0)
    with pytest.raises(ValueError, match="precondition_frequency"):
        gbopt.scale_by_soap(precondition_frequency=0)
    with pytest.raises(ValueError, match="coeffs"):
        _matrix.newton_schulz(jnp.ones((2, 2)), (1.0, 2.0))


# ----------------------------------------------------------------------------------------
# Training: all three reduce the language model's loss (tiny model, a few steps).


@pytest.mark.slow
@pytest.mark.parametrize("name", ["muon", "shampoo", "soap"])
def test_trains_the_tiny_language_model(name):
    corpus = charlm.load_corpus(20_000, seed=0)
    config = charlm.TINY
    params = charlm.init_params(jax.random.key(0), config)
    lr = {"muon": 0.02, "shampoo": 3e-3, "soap": 3e-3}[name]
    tx = getattr(gbopt, name)(lr)
    state = tx.init(params)

    @jax.jit
    def step(params, state, key):
        batch = charlm.sample_batch(key, corpus.train, 16, config.seq_len)
        loss, grads = jax.value_and_grad(charlm.loss)(params, batch, config)
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state, loss

    losses = []
    for key in jax.random.split(jax.random.key(1), 40):
        params, state, loss = step(params, state, key)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < losses[0] - 1.0


# ----------------------------------------------------------------------------------------
# Sharding (eight simulated CPU devices, tests/conftest.py).

OPTS = {
    "muon": lambda: gbopt.muon(0.02),
    "shampoo": lambda: gbopt.shampoo(1e-2, start_preconditioning_step=1),
    "soap": lambda: gbopt.soap(1e-2),
}


def _mlp_params():
    rng = np.random.default_rng(0)
    return {
        # square, so that the factors are full rank: SOAP's eigenbasis of a rank-deficient
        # factor is arbitrary in its null space (and so rounding-dependent)
        "w1": rng.normal(size=(8, 8)).astype(np.float32) * 0.3,
        "w2": rng.normal(size=(8, 8)).astype(np.float32) * 0.3,
        "b": np.zeros(8, np.float32),
    }


def _mlp_loss(params, x, y):
    h = jnp.tanh(x @ params["w1"]) @ params["w2"] + params["b"]
    return jnp.mean(jnp.square(h - y))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPTS))
def test_data_parallel_equals_one_device(name):
    # float64: Shampoo's inverse roots of ill-conditioned factors amplify the float32
    # rounding of the gradient's all-reduce (summed in another order) to about 1e-5.
    with jax.enable_x64(True):
        _data_parallel(name)


def _data_parallel(name):
    tx = OPTS[name]()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(3)
    params = jax.tree.map(lambda x: x.astype(np.float64), _mlp_params())
    batches = [(rng.normal(size=(32, 8)), rng.normal(size=(32, 8))) for _ in range(4)]
    split = NamedSharding(mesh, P("data"))

    def step(params, state, x, y):
        grads = jax.grad(_mlp_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    def dp_step(params, state, x, y):
        local = jax.lax.pcast(params, "data", to="varying")
        grads = jax.lax.pmean(jax.grad(_mlp_loss)(local, x, y), "data")
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    sharded = jax.jit(
        jax.shard_map(
            dp_step, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P())
        )
    )
    dp = jax.device_put((params, tx.init(params)), NamedSharding(mesh, P()))
    ref = (params, tx.init(params))
    for x, y in batches:
        dp = sharded(*dp, jax.device_put(x, split), jax.device_put(y, split))
        ref = jax.jit(step)(*ref, x, y)
    for got, want in zip(jax.tree.leaves(dp[0]), jax.tree.leaves(ref[0]), strict=True):
        assert got.dtype == np.float64
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-12)


COLLECTIVE = re.compile(r"(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPTS))
def test_model_parallel_state_follows_and_results_equal_unsharded(name):
    tx = OPTS[name]()
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    params = _mlp_params()
    specs = {"w1": P(None, "x"), "w2": P("x", None), "b": P()}
    sharded = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}
    state = jax.jit(tx.init)(sharded)
    # per-parameter statistics shaped like the parameter (moments, not factors) follow its
    # sharding
    moments = {"mu", "nu", "momentum", "graft", "graft_momentum"}
    checked = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        names = {getattr(k, "name", None) for k in path}
        key = getattr(path[-1], "key", None)
        if names & moments and key in ("w1", "w2"):
            assert leaf.sharding.is_equivalent_to(sharded[key].sharding, 2), (name, path)
            checked += 1
    assert checked >= 2
    grads = jax.grad(_mlp_loss)(params, np.ones((4, 8), np.float32), np.zeros((4, 8), np.float32))

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return gbopt.apply_updates(p, u), s

    got, _ = jax.jit(step)(sharded, state, grads)
    want, _ = jax.jit(step)(params, tx.init(params), grads)
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6)
