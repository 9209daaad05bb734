"""Complex parameters (issue 13, item 2): optax's convention in the core, PyTorch's in presets.

gbopt's core follows optax: a second moment is the real :math:`|g|^2 = g \\bar g`, so a
complex parameter moves along its gradient with one step size per element. The
``gbopt.pytorch`` presets follow ``torch.optim``, which runs every rule on
``torch.view_as_real(p)``: real and imaginary parts are two reals with two second
moments. Before: ``accumulate_square`` used ``g * g`` (``adagrad(1.0, eps=0)`` with
``g = 0.5j`` returned ``+1``, real, and a second moment of -0.25), ``global_norm``
returned a complex number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt

torch = pytest.importorskip("torch")

STEPS = 60
RNG = np.random.default_rng(3)
X0 = {
    "w": RNG.normal(size=(3, 2)) + 1j * RNG.normal(size=(3, 2)),
    "b": RNG.normal(size=(2,)) * 1e-2 + 1j * RNG.normal(size=(2,)),
}
TARGET = {k: RNG.normal(size=v.shape) + 1j * RNG.normal(size=v.shape) for k, v in X0.items()}
SCALE = {"w": 3.0, "b": 0.2}  # two curvatures, so the per-element step sizes matter


def gradient(params):
    """The conjugate gradient of sum s |x - t|^2 + 0.1 |x|^4 (what is added to params)."""
    return {k: 2 * SCALE[k] * (p - TARGET[k]) + 0.4 * np.abs(p) ** 2 * p for k, p in params.items()}


def trajectory(tx, dtype):
    """The parameters after each step (one compiled scan), and the last state."""
    params = {k: jnp.asarray(v, dtype) for k, v in X0.items()}
    target = {k: jnp.asarray(v, dtype) for k, v in TARGET.items()}

    def body(carry, _):
        params, state = carry
        g = {
            k: 2 * SCALE[k] * (p - target[k]) + 0.4 * (jnp.abs(p) ** 2).astype(dtype) * p
            for k, p in params.items()
        }
        updates, state = tx.update(g, state, params)
        params = gbopt.apply_updates(params, updates)
        return (params, state), params

    (_, state), path = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=STEPS))(
        params
    )
    assert all(path[k].dtype == dtype for k in path)
    return [{k: np.asarray(v[i]) for k, v in path.items()} for i in range(STEPS)], state


def deviation(a, b):
    return max(max(np.max(np.abs(x[k] - y[k])) for k in x) for x, y in zip(a, b, strict=True))


TOL = {jnp.complex128: 1e-12, jnp.complex64: 2e-5}

OPTAX_CASES = [
    ("sgd-momentum", lambda: gbopt.sgd(1e-2, momentum=0.9), lambda: optax.sgd(1e-2, 0.9)),
    ("sgd-nesterov", lambda: gbopt.sgd(1e-2, 0.9, True), lambda: optax.sgd(1e-2, 0.9, True)),
    ("adam", lambda: gbopt.adam(3e-2), lambda: optax.adam(3e-2)),
    ("adam-nesterov", lambda: gbopt.adam(3e-2, nesterov=True), lambda: optax.nadam(3e-2)),
    (
        "adam-eps-root",
        lambda: gbopt.adam(3e-2, eps_root=1e-6),
        lambda: optax.adam(3e-2, eps_root=1e-6),
    ),
    ("rmsprop", lambda: gbopt.rmsprop(1e-2, eps=1e-8), lambda: optax.rmsprop(1e-2)),
    (
        "rmsprop-centered-momentum",
        lambda: gbopt.rmsprop(1e-2, eps=1e-8, centered=True, momentum=0.5),
        lambda: optax.rmsprop(1e-2, centered=True, momentum=0.5),
    ),
    (
        "rmsprop-bias-correction",
        lambda: gbopt.rmsprop(1e-2, eps=1e-8, bias_correction=True),
        lambda: optax.rmsprop(1e-2, bias_correction=True),
    ),
    (
        "rmsprop_nesterov",
        lambda: gbopt.rmsprop_nesterov(1e-2, eps=1e-8),
        lambda: optax.rmsprop(1e-2, momentum=0.9, nesterov=True),
    ),
    (
        "adagrad",
        lambda: gbopt.adagrad(0.3, initial_accumulator_value=0.1, eps_in_sqrt=True),
        lambda: optax.adagrad(0.3),
    ),
    (
        "clip-then-adam",
        lambda: gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.adam(3e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2)),
    ),
]


@pytest.mark.parametrize("dtype", [jnp.complex64, jnp.complex128], ids=["c64", "c128"])
@pytest.mark.parametrize(
    "make_gbopt, make_optax", [c[1:] for c in OPTAX_CASES], ids=[c[0] for c in OPTAX_CASES]
)
def test_core_trajectories_equal_optax(make_gbopt, make_optax, dtype):
    with jax.enable_x64(dtype == jnp.complex128):
        got, state = trajectory(make_gbopt(), dtype)
        want, _ = trajectory(make_optax(), dtype)
    assert deviation(got, want) <= TOL[dtype]
    assert deviation(want, [X0] * STEPS) > 0.1  # it moved
    # Second moments are real; momenta stay complex.
    for name in ("nu",):
        try:
            nu = gbopt.state_get(state, name)
        except (KeyError, ValueError):
            continue
        assert all(not jnp.iscomplexobj(x) for x in jax.tree.leaves(nu))


def test_issue_examples():
    g = {"w": jnp.array([0.5j], jnp.complex64)}
    p = {"w": jnp.array([1 + 0j], jnp.complex64)}
    tx = gbopt.adagrad(1.0, eps=0.0)
    updates, state = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-1j], atol=1e-7)
    nu = gbopt.state_get(state, "nu")["w"]
    assert nu.dtype == jnp.float32 and float(nu[0]) == 0.25
    # Adam moves an imaginary gradient along the imaginary axis.
    tx = gbopt.adam(0.1)
    updates, _ = tx.update(g, tx.init(p), p)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1j], rtol=1e-6)
    mixed = {"w": jnp.array([0.5j, 1 + 1j], jnp.complex64), "r": jnp.array([2.0])}
    norm = gbopt.global_norm(mixed)
    assert not jnp.iscomplexobj(norm)
    np.testing.assert_allclose(float(norm), float(optax.global_norm(mixed)), rtol=1e-7)
    np.testing.assert_allclose(float(norm), 2.5, rtol=1e-7)


TORCH_CASES = [
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.1}),
    ("Adagrad", {"lr": 0.3}),
    ("RMSprop", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.5}),
    ("Adam", {"lr": 3e-2}),
    ("Adam", {"lr": 3e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 3e-2}),
    ("NAdam", {"lr": 3e-2}),
    ("Adamax", {"lr": 3e-2}),
    ("RAdam", {"lr": 3e-2}),
    ("Adadelta", {"lr": 0.5}),
    ("ASGD", {"lr": 1e-2}),
    ("Rprop", {"lr": 1e-2}),
]


@pytest.fixture
def torch_float64():
    """NAdam keeps its momentum product in torch's default dtype; make it float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def torch_trajectory(name, kwargs, dtype):
    params = {k: torch.tensor(v, dtype=dtype) for k, v in X0.items()}
    opt = getattr(torch.optim, name)(list(params.values()), foreach=False, **kwargs)
    path = []
    for _ in range(STEPS):
        g = gradient({k: v.numpy() for k, v in params.items()})
        for k, p in params.items():
            p.grad = torch.tensor(g[k], dtype=dtype)
        opt.step()
        path.append({k: v.numpy().copy() for k, v in params.items()})
    return path


@pytest.mark.parametrize(
    "dtype",
    [(jnp.complex64, torch.complex64), (jnp.complex128, torch.complex128)],
    ids=["c64", "c128"],
)
@pytest.mark.parametrize(
    "name, kwargs", TORCH_CASES, ids=[f"{n}-{'-'.join(k)}" for n, k in TORCH_CASES]
)
def test_pytorch_presets_equal_torch(name, kwargs, dtype, torch_float64):
    jax_dtype, torch_dtype = dtype
    want = torch_trajectory(name, kwargs, torch_dtype)
    with jax.enable_x64(jax_dtype == jnp.complex128):
        got, _ = trajectory(getattr(gbopt.pytorch, name)(**kwargs), jax_dtype)
    assert deviation(got, want) <= TOL[jax_dtype]


def test_pytorch_convention_differs_from_the_core_one():
    """The two conventions are different rules: the tests above could tell them apart."""
    with jax.enable_x64(True):
        torch_rule, _ = trajectory(gbopt.pytorch.Adam(3e-2), jnp.complex128)
        optax_rule, _ = trajectory(gbopt.adam(3e-2), jnp.complex128)
    assert deviation(torch_rule, optax_rule) > 1e-3


def test_pytorch_presets_keep_real_trees_untouched():
    params = {"w": jnp.ones(3)}
    state = gbopt.pytorch.Adam(1e-3).init(params)
    assert jax.tree.map(jnp.shape, gbopt.state_get(state, "nu")) == {"w": (3,)}
    state = gbopt.pytorch.Adam(1e-3).init({"c": jnp.ones(3, jnp.complex64)})
    assert jax.tree.map(jnp.shape, gbopt.state_get(state, "nu")) == {"c": (3, 2)}


# A real storage dtype for a complex first moment (optax's test_explicit_dtype asks for
# mu_dtype=float32 on complex64 parameters): gbopt keeps the real and imaginary parts as
# pairs of that dtype, so float32 pairs hold a complex64 moment exactly.
PAIRED_CASES = [
    ("sgd-momentum", lambda d: gbopt.sgd(1e-2, 0.9, accumulator_dtype=d), "trace", optax.sgd),
    ("adam", lambda d: gbopt.adam(3e-2, mu_dtype=d), "mu", optax.adam),
    ("adamw", lambda d: gbopt.adamw(3e-2, mu_dtype=d), "mu", optax.adamw),
]


@pytest.mark.parametrize(
    "dtype, real",
    [(jnp.complex64, jnp.float32), (jnp.complex128, jnp.float64)],
    ids=["c64", "c128"],
)
@pytest.mark.parametrize("case", PAIRED_CASES, ids=[c[0] for c in PAIRED_CASES])
def test_a_real_storage_dtype_keeps_the_complex_moment_as_pairs(case, dtype, real):
    _, make, field, optax_factory = case
    with jax.enable_x64(dtype == jnp.complex128):
        paired, state = trajectory(make(real), dtype)
        plain, plain_state = trajectory(make(None), dtype)
        lr = 1e-2 if field == "trace" else 3e-2
        theirs, _ = trajectory(
            optax_factory(lr, 0.9) if field == "trace" else optax_factory(lr), dtype
        )
    for got, want in zip(paired, plain, strict=True):  # the same trajectory, bit for bit
        for k in got:
            np.testing.assert_array_equal(got[k], want[k])
    assert deviation(paired, theirs) <= TOL[dtype]  # and optax's, with complex storage
    stored, full = gbopt.state_get(state, field), gbopt.state_get(plain_state, field)
    for k in X0:
        assert stored[k].dtype == real and stored[k].shape == (*X0[k].shape, 2)
        np.testing.assert_array_equal(np.asarray(stored[k][..., 0]), np.asarray(full[k].real))
        np.testing.assert_array_equal(np.asarray(stored[k][..., 1]), np.asarray(full[k].imag))
        assert np.all(np.asarray(stored[k][..., 1]) != 0)


def test_a_complex_storage_dtype_for_real_parameters_is_honoured_and_the_update_stays_real():
    params = {"w": jnp.asarray(X0["w"].real, jnp.float32)}
    grads = [{"w": jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32)} for _ in range(5)]
    runs = {}
    for storage in (None, jnp.complex64):
        tx = gbopt.adam(1e-2, mu_dtype=storage)
        state, out = tx.init(params), []
        for g in grads:
            u, state = jax.jit(tx.update)(g, state, params)
            assert u["w"].dtype == jnp.float32
            out.append(np.asarray(u["w"]))
        runs[storage] = out, gbopt.state_get(state, "mu")["w"]
    np.testing.assert_array_equal(np.stack(runs[None][0]), np.stack(runs[jnp.complex64][0]))
    mu = runs[jnp.complex64][1]
    assert mu.dtype == jnp.complex64 and np.all(np.asarray(mu.imag) == 0)
    np.testing.assert_array_equal(np.asarray(mu.real), np.asarray(runs[None][1]))
