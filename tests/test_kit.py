"""The kit every primitive is built with, and the architecture it gives the package.

* A statistic is its leaf rule: the kit does init, checks, dtypes and the step count.
* Every primitive gives the same kind of error for the same fault.
* An optimizer is built, and validated, once: ``update`` calls no validator.
* The import graph runs one way: contract -> primitives -> combinators -> optimizers -> consumers.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gbopt
from gbopt import _validate
from gbopt._base import elementwise, statistic

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
GRADS = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([1.0, -2.0, 3.0])}

# Every public primitive, built with small valid arguments.
PRIMITIVES = {
    "trace": lambda: gbopt.trace(0.9),
    "ema": lambda: gbopt.ema(0.9),
    "accumulate_square": lambda: gbopt.accumulate_square(0.9),
    "accumulate_centered_square": lambda: gbopt.accumulate_centered_square(0.9),
    "accumulate_inf_norm": lambda: gbopt.accumulate_inf_norm(0.9),
    "running_max": lambda: gbopt.running_max(),
    "nadam_momentum": lambda: gbopt.nadam_momentum(0.9),
    "bias_correction": lambda: gbopt.bias_correction(0.9),
    "scale_by_learning_rate": lambda: gbopt.scale_by_learning_rate(lambda c: 0.1 / (1 + c)),
    "scale_by_schedule": lambda: gbopt.scale_by_schedule(lambda c: 0.1 / (1 + c)),
}
STATEFUL = sorted(PRIMITIVES)


class EmaAbsState(NamedTuple):
    abs_mean: Any


def ema_abs(decay, dtype=None):
    def rule(u, a):
        a = decay * a + (1 - decay) * jnp.abs(u)
        return a, a

    return statistic("ema_abs", EmaAbsState, rule, dtype=dtype, real=("abs_mean",))


def test_a_statistic_is_its_leaf_rule():
    tx = ema_abs(0.5)
    state = tx.init(PARAMS)
    assert isinstance(state, EmaAbsState)
    out, state = tx.update(GRADS, state)
    out, state = tx.update(GRADS, state)
    want = jax.tree.map(lambda g: 0.75 * np.abs(g), GRADS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7), out, want)
    assert tx.info.name == "ema_abs" and tx.info.kind == "statistic"
    assert tx.info.state == ("abs_mean",)


def test_storage_narrows_but_arithmetic_stays_float32():
    """bf16 storage: the state after each step is the float32 step of the rounded state."""
    tx = ema_abs(0.9, dtype=jnp.bfloat16)
    state = tx.init(PARAMS)
    assert state.abs_mean["w"].dtype == jnp.bfloat16
    model = np.zeros(3, np.float32)
    for k in range(5):
        g = {"w": GRADS["w"], "b": GRADS["b"] * (k + 1) / 3}
        _, state = tx.update(g, state)
        f32 = np.float32(0.9) * model + np.float32(1 - 0.9) * np.abs(np.asarray(g["b"]))
        model = np.asarray(jnp.asarray(f32, jnp.bfloat16).astype(jnp.float32))
        np.testing.assert_array_equal(np.asarray(state.abs_mean["b"], np.float32), model)


def test_a_storage_dtype_must_be_floating():
    with pytest.raises(TypeError, match="`dtype` must be a floating-point dtype"):
        ema_abs(0.9, dtype=jnp.int8)
    with pytest.raises(TypeError, match="`dtype` must be a floating-point dtype"):
        gbopt.ema(0.9, dtype=jnp.int32)


def test_complex_parameters_keep_complex_first_and_real_second_moments():
    params = {"z": jnp.ones(2, jnp.complex64)}
    mu = gbopt.ema(0.9).init(params).mu["z"]
    nu = gbopt.accumulate_square(0.9).init(params).nu["z"]
    assert mu.dtype == jnp.complex64 and nu.dtype == jnp.float32
    out, state = gbopt.accumulate_square().update(
        {"z": jnp.array([0.5j, 3 + 4j])}, (gbopt.accumulate_square().init(params))
    )
    np.testing.assert_allclose(state.nu["z"], [0.25, 25.0])


class MomentsState(NamedTuple):
    mean: Any
    square: Any


def moments(decay, dtype=None):
    """A first moment that follows the parameters and a second that does not."""

    def rule(u, m, r):
        m = decay * m + (1 - decay) * u
        r = decay * r + (1 - decay) * u * jnp.conj(u)
        return m, m, r.real

    return statistic(
        "moments",
        MomentsState,
        rule,
        dtype=dtype,
        real=("square",),
        follows_params=("mean",),
    )


def test_follows_params_stores_first_moments_in_the_parameters_dtype():
    for low in (jnp.bfloat16, jnp.float16):
        state = moments(0.9).init({"w": jnp.ones(3, low)})
        assert state.mean["w"].dtype == low and state.square["w"].dtype == jnp.float32
        out, state = moments(0.9).update({"w": jnp.full(3, 2.0, low)}, state)
        assert out["w"].dtype == low and state.mean["w"].dtype == low
        # 0.9 * 0 + 0.1 * 2 = 0.2 in float32, rounded once to the low dtype
        assert state.mean["w"][0] == jnp.asarray(np.float32(0.1) * np.float32(2), low)
    for dtype in (jnp.float32, jnp.complex64):
        state = moments(0.9).init({"w": jnp.ones(3, dtype)})
        assert state.mean["w"].dtype == dtype and state.square["w"].dtype == jnp.float32
    with pytest.raises(ValueError, match=r"`follows_params` .* must name fields .*\['nu'\]"):
        statistic("bad", MomentsState, lambda u, m, r: (u, m, r), follows_params=("nu",))


def test_a_real_storage_dtype_keeps_a_complex_statistic_as_pairs():
    z = jnp.asarray([1 + 2j, -3j], jnp.complex64)
    tx = moments(0.5, dtype=jnp.float32)
    state = tx.init({"z": z})
    assert state.mean["z"].shape == (2, 2) and state.mean["z"].dtype == jnp.float32
    assert state.square["z"].shape == (2,) and state.square["z"].dtype == jnp.float32
    out, state = tx.update({"z": z}, state)
    np.testing.assert_array_equal(np.asarray(out["z"]), np.asarray(0.5 * z))
    np.testing.assert_array_equal(np.asarray(state.mean["z"]), [[0.5, 1.0], [0.0, -1.5]])
    with pytest.raises(ValueError, match=r"updates\['z'\] has shape \(3,\)"):
        tx.update({"z": jnp.zeros(3, jnp.complex64)}, state)
    real_state = moments(0.5, dtype=jnp.float32).init({"z": jnp.zeros(2, jnp.float32)})
    with pytest.raises(ValueError, match=r"`mean` holds real values of shape \(2,\)"):
        tx.update({"z": z}, real_state)


def test_a_map_is_its_function():
    tx = elementwise("absolute", jnp.abs, math="|u|")
    out, state = tx.update(GRADS, tx.init(PARAMS))
    assert state == ()
    np.testing.assert_array_equal(out["b"], [1.0, 2.0, 3.0])
    bf16 = {"b": GRADS["b"].astype(jnp.bfloat16)}
    assert tx.update(bf16, ())[0]["b"].dtype == jnp.bfloat16


@pytest.mark.parametrize("name", STATEFUL)
def test_every_primitive_refuses_a_state_that_is_not_its_own_the_same_way(name):
    tx = PRIMITIVES[name]()
    with pytest.raises(ValueError, match=rf"{name} got a state of type (tuple|dict)"):
        tx.update(GRADS, {"not": "a state"}, PARAMS)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in STATEFUL
        if n not in {"bias_correction", "scale_by_learning_rate", "scale_by_schedule"}
    ],
)
def test_every_statistic_names_the_path_where_the_updates_differ(name):
    tx = PRIMITIVES[name]()
    state = tx.init(PARAMS)
    bad = {"w": GRADS["w"], "c": GRADS["b"]}
    with pytest.raises(ValueError, match=r"updates\['b'\] is missing"):
        tx.update(bad, state, PARAMS)
    wrong_shape = {"w": GRADS["w"], "b": jnp.zeros(4)}
    with pytest.raises(ValueError, match=r"updates\['b'\] has shape \(4,\)"):
        tx.update(wrong_shape, state, PARAMS)


@pytest.mark.parametrize("name", ["bias_correction", "scale_by_schedule", "nadam_momentum"])
def test_step_pieces_share_the_owner_count_or_keep_their_own(name):
    alone = PRIMITIVES[name]()
    state = alone.init(PARAMS)
    assert isinstance(state, gbopt.StepCountState)
    owned = gbopt.with_step_count(gbopt.chain(PRIMITIVES[name](), gbopt.bias_correction(0.5)))
    owned_state = owned.init(PARAMS)
    counts = [p for p, _ in jax.tree_util.tree_leaves_with_path(owned_state) if "count" in str(p)]
    assert len(counts) == 1  # one count for both step-dependent pieces
    for t in range(1, 4):
        out_alone, state = alone.update(GRADS, state)
        out_owned, owned_state = owned.update(GRADS, owned_state)
        jax.tree.map(
            lambda a, b, t=t: np.testing.assert_allclose(a, b / (1 - 0.5**t), rtol=1e-6),
            out_owned,
            out_alone,
        )
    assert int(owned_state.count) == int(state.count) == 3


def test_nested_step_owners_keep_one_count():
    inner = gbopt.adam(1e-3)
    tx = gbopt.with_step_count(gbopt.chain(inner, gbopt.bias_correction(0.5)))
    state = tx.init(PARAMS)
    assert len([p for p, _ in jax.tree_util.tree_leaves_with_path(state) if "count" in str(p)]) == 1
    alone = inner.init(PARAMS)
    for _ in range(3):
        (u, state), (v, alone) = tx.update(GRADS, state, PARAMS), inner.update(GRADS, alone, PARAMS)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b / (1 - 0.5**3), rtol=1e-6), u, v)


def test_an_adam_update_calls_no_validator(monkeypatch):
    tx = gbopt.adam(1e-3)
    calls = []
    for name in dir(_validate):
        fn = getattr(_validate, name)
        if callable(fn) and not name.startswith("__") and fn.__module__ == _validate.__name__:
            monkeypatch.setattr(
                _validate, name, lambda *a, _n=name, _f=fn, **k: calls.append(_n) or _f(*a, **k)
            )
    state = tx.init(PARAMS)
    for _ in range(2):
        _, state = tx.update(GRADS, state, PARAMS)
    assert calls == []
    gbopt.adam(1e-3)  # construction is where arguments are checked
    assert calls


def test_with_step_count_builds_its_transform_once():
    built = []

    def build(step):
        built.append(step)
        return gbopt.chain(gbopt.ema(0.9), gbopt.bias_correction(0.9, step=step))

    tx = gbopt.with_step_count(build)
    state = tx.init(PARAMS)
    for _ in range(3):
        _, state = tx.update(GRADS, state)
    assert built == [gbopt.SHARED_STEP]


# ---------------------------------------------------------------------------------------
# The import graph.

LAYERS = [
    {"_dtypes", "_tree", "_tree_checks", "_placement", "_numerics", "_validate", "_base"},
    {"_statistics", "_statistics_adaptive", "_maps", "_regularize"},
    {"_combine"},
    {"_partition", "_hyperparams", "_safety", "_stacking", "_sharding"},
    {"_textbook", "pytorch", "schedules"},
    {"_state", "_checkpoint", "_update", "demo", "__init__", "__main__"},
]
PACKAGE = pathlib.Path(gbopt.__file__).parent


def _layer(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    return 4  # optimizer modules added by the catalog sit with the optimizers


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gbopt"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_imports_never_run_back_up_the_layers(path):
    module = "demo" if path.parent.name == "demo" else path.stem
    if module == "__init__" and path.parent == PACKAGE:
        return  # the package re-exports everything
    mine = _layer(module)
    for imported in _imports(path):
        if imported in {"demo"} or module == "demo":
            continue
        assert _layer(imported) <= mine, f"{path.name} (layer {mine}) imports {imported}"


def test_import_gbopt_imports_no_plotting_or_data_library():
    import subprocess
    import sys

    code = (
        "import sys, gbopt; bad = [m for m in ('matplotlib', 'sklearn', 'tqdm', 'flax', "
        "'haiku', 'torch', 'gbopt.demo') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_surface_is_all_and_only_all():
    assert sorted(gbopt.__all__) == sorted(dir(gbopt))
    assert "version" not in gbopt.__all__
    for name in gbopt.__all__:
        assert hasattr(gbopt, name)
    for module in (gbopt.schedules, gbopt.pytorch):
        assert set(dir(module)) == set(module.__all__)
        assert not {"Any", "Callable", "Mapping"} & set(dir(module))
