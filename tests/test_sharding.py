"""Sharded parameters and optimizer state, on the eight simulated CPU devices of conftest.py.

What is proven here, against JAX's own sharding (no gbopt distribution layer):

* the state of every optimizer and combinator follows the parameters' sharding, for
  ``tx.init`` and for ``jax.jit(tx.init)`` without ``out_shardings``, on meshes with
  ``Auto`` and with ``Explicit`` axes; step counts are replicated over the mesh;
* a jitted update of sharded parameters compiles to no collective and equals the
  unsharded update to float32 rounding (``clip_by_global_norm`` needs all-reduces of
  scalars, and nothing else);
* data-parallel training with ``jax.shard_map`` and ``jax.lax.pmean`` equals the
  single-device run;
* ZeRO stage 1 with :func:`gbopt.state_shardings`: same results, per-device state memory
  divided by the number of devices.

Multi-host runs and real accelerators cannot be tested here (see docs/sharding.md).
"""

import collections
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OPTIMIZERS
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gbopt

pytestmark = pytest.mark.slow

NAMES = list(OPTIMIZERS)
# an HLO instruction `%name = <shape> <collective>(...)`, its asynchronous form `-start`
COLLECTIVE = re.compile(
    r"=\s*([^=]*?)\s+(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
    r"(?:-start)?\("
)

# Combinators and stateful primitives beyond the seed optimizers' own chains.
COMPOSED = {
    "chain(trace, ema(debias))": lambda: gbopt.chain(
        gbopt.trace(0.9), gbopt.ema(0.9, debias=True), gbopt.scale(-1e-2)
    ),
    "divide(ema, accumulate_square(r0=0.1))": lambda: gbopt.chain(
        gbopt.divide(
            gbopt.ema(0.9),
            gbopt.chain(gbopt.accumulate_square(initial_accumulator_value=0.1), gbopt.sqrt()),
        ),
        gbopt.scale(-1e-2),
    ),
    "with_step_count(bias_correction, schedule)": lambda: gbopt.with_step_count(
        lambda t: gbopt.chain(
            gbopt.ema(0.9),
            gbopt.bias_correction(0.9, step=t),
            gbopt.scale_by_learning_rate(lambda c: 1e-2 / (1.0 + c), step=t),
        )
    ),
    "sgd(schedule)": lambda: gbopt.sgd(lambda c: 1e-2 * 0.5**c),
    # gbopt.pytorch: its own primitives (schedule count, centered square, running max,
    # infinity norm, NAdam's momentum product, a float scalar)
    "pytorch.SGD(schedule, momentum)": lambda: gbopt.pytorch.SGD(
        lr=lambda c: 1e-2 / (1.0 + c), momentum=0.9
    ),
    "pytorch.RMSprop(centered)": lambda: gbopt.pytorch.RMSprop(lr=1e-2, centered=True),
    "pytorch.Adagrad(lr_decay, s0=0.1)": lambda: gbopt.pytorch.Adagrad(
        lr=1e-2, lr_decay=1e-2, initial_accumulator_value=0.1
    ),
    "pytorch.Adam(amsgrad)": lambda: gbopt.pytorch.Adam(lr=1e-2, amsgrad=True),
    "pytorch.NAdam": lambda: gbopt.pytorch.NAdam(lr=1e-2),
    "pytorch.Adamax": lambda: gbopt.pytorch.Adamax(lr=1e-2),
}
TRANSFORMS = {**OPTIMIZERS, **COMPOSED}


def _mesh(axis_type):
    return jax.make_mesh((4, 2), ("x", "y"), axis_types=(axis_type, axis_type))


def _cases(*flags):
    """(name, axis type, *flag) for every transform: optimizers on both kinds of mesh axes,
    combinators (whose pieces the optimizers also use) and `gd` (an alias) on Auto only."""
    return [
        pytest.param(
            name, axis_type, *flag, id="-".join([name, axis_type.name.lower(), *map(str, flag)])
        )
        for name in TRANSFORMS
        for axis_type in (AxisType.Auto, AxisType.Explicit)
        for flag in (flags or [()])
        if axis_type == AxisType.Auto or (name in OPTIMIZERS and name != "gd")
    ]


# Leaves of several shapes and dtypes, sharded in several ways over the 4x2 mesh.
SPECS = {
    "w": ((8, 6), jnp.float32, P("x", "y")),
    "w_t": ((6, 8), jnp.float32, P("y", "x")),
    "flat": ((16,), jnp.float32, P(("x", "y"))),
    "cols": ((5, 4), jnp.float32, P(None, "x")),
    "half": ((8, 2), jnp.bfloat16, P("x", None)),
    "scalar": ((), jnp.float32, P()),
}


def _host_tree(seed):
    rng = np.random.default_rng(seed)
    return {k: np.asarray(rng.normal(size=shape), dtype) for k, (shape, dtype, _) in SPECS.items()}


def _shard(tree, mesh):
    return {k: jax.device_put(v, NamedSharding(mesh, SPECS[k][2])) for k, v in tree.items()}


def _assert_close(got, want):
    """Equal up to rounding: exact for counts, a few float32 ulp, one ulp of a narrower dtype.

    XLA optimises the sharded and the unsharded program separately and may place the
    scalar factors of an update (Adam's bias corrections) differently, inside or
    outside an element-wise fusion: the float32 results then differ by an ulp or two,
    and a bfloat16 parameter rounded from them by at most one of its own ulp.
    """
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype
    if not jnp.issubdtype(want.dtype, jnp.floating):
        np.testing.assert_array_equal(got, want)
        return
    eps = float(jnp.finfo(want.dtype).eps)
    rtol = 1e-6 if want.dtype.itemsize >= 4 else eps
    np.testing.assert_allclose(
        got.astype(np.float32), want.astype(np.float32), rtol=rtol, atol=rtol / 10
    )


def _compile(fn, *args):
    """``fn`` compiled for ``args``: callable, and strict about its inputs' shardings."""
    return jax.jit(fn).lower(*args).compile()


def _collectives(compiled) -> list[tuple[str, str]]:
    """The ``(collective, result shape)`` of each collective in a compiled program."""
    return [(op, shape) for shape, op in COLLECTIVE.findall(compiled.as_text())]


def _check_state_follows(state, params, mesh):
    """Arrays keyed by a parameter have its sharding; every other leaf is a replicated scalar."""
    devices = set(mesh.devices.flat)
    followed = collections.Counter()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        where = jax.tree_util.keystr(path)
        key = path[-1].key if isinstance(path[-1], jax.tree_util.DictKey) else None
        if key in params:
            p = params[key]
            assert leaf.shape == p.shape, where
            assert leaf.sharding.is_equivalent_to(p.sharding, p.ndim), where
            followed[key] += 1
        else:
            assert leaf.shape == (), where  # a step count, NAdam's momentum product
            assert leaf.sharding.is_fully_replicated, where
            assert leaf.sharding.device_set == devices, where
    return followed


@pytest.mark.parametrize(("name", "axis_type", "how"), _cases(("eager",), ("jit",)))
def test_state_follows_the_parameters_sharding(name, axis_type, how):
    tx, mesh, jit = TRANSFORMS[name](), _mesh(axis_type), how == "jit"
    params = _shard(_host_tree(0), mesh)
    if jit:
        init = _compile(tx.init, params)
        assert _collectives(init) == []
        state = init(params)
    else:
        state = tx.init(params)
    followed = _check_state_follows(state, params, mesh)
    assert set(followed) in (set(), set(SPECS))  # every parameter has its statistics, or none
    # and holds what the unsharded init holds
    for got, want in zip(
        jax.tree.leaves(state), jax.tree.leaves(tx.init(_host_tree(0))), strict=True
    ):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    return step


@functools.cache
def _unsharded_run(name):
    """Three steps of ``TRANSFORMS[name]`` on one device (shared by both mesh types)."""
    tx = TRANSFORMS[name]()
    params, state = _host_tree(0), tx.init(_host_tree(0))
    step = jax.jit(_step(tx))
    for seed in (1, 2, 3):
        params, state = step(params, state, _host_tree(seed))
    return params, state


@pytest.mark.parametrize(("name", "axis_type"), _cases())
def test_sharded_update_has_no_collectives_and_equals_unsharded(name, axis_type):
    tx, mesh = TRANSFORMS[name](), _mesh(axis_type)
    step = _step(tx)
    params = _shard(_host_tree(0), mesh)
    state = jax.jit(tx.init)(params)
    grads = _shard(_host_tree(1), mesh)
    sharded_step = _compile(step, params, state, grads)
    assert _collectives(sharded_step) == []

    for seed in (1, 2, 3):  # fed its own outputs, the executable checks they kept their placement
        params, state = sharded_step(params, state, _shard(_host_tree(seed), mesh))
    for got, want in zip(
        jax.tree.leaves((params, state)), jax.tree.leaves(_unsharded_run(name)), strict=True
    ):
        _assert_close(got, want)
    # the step keeps every placement, so the next call reuses the same executable
    _check_state_follows(state, params, mesh)
    for k, p in params.items():
        assert p.sharding.is_equivalent_to(NamedSharding(mesh, SPECS[k][2]), p.ndim), k


def test_clip_by_global_norm_needs_all_reduces_of_scalars_only():
    """The global norm sums over every shard: all-reduces of scalar partial sums, nothing else."""
    mesh = _mesh(AxisType.Auto)
    tx = gbopt.chain(gbopt.clip_by_global_norm(1.0), gbopt.sgd(1e-1))
    params, grads = _shard(_host_tree(0), mesh), _shard(_host_tree(1), mesh)

    def step(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return gbopt.apply_updates(params, updates)

    found = _collectives(_compile(step, params, grads))
    assert found and {op for op, _ in found} == {"all-reduce"}
    for _, shape in found:  # f32[] or a tuple of them: no array is communicated
        dims = re.findall(r"\[([^\]]*)\]", shape)
        assert dims and not any(dims), shape
    want = jax.jit(step)(_host_tree(0), _host_tree(1))
    for k, got in jax.jit(step)(params, grads).items():
        # the partial sums are added in another order: float32 rounding only
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want[k], np.float32), rtol=1e-6
        )


def _linear_loss(params, x, y):
    return jnp.mean(jnp.square(x @ params["w"] + params["b"] - y))


@pytest.mark.parametrize("name", NAMES)
def test_data_parallel_shard_map_with_pmean_equals_one_device(name):
    tx = OPTIMIZERS[name]()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(3)
    params = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    batches = [
        (rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32))
        for _ in range(3)
    ]
    split = NamedSharding(mesh, P("data"))

    def step(params, state, x, y):
        grads = jax.grad(_linear_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    def dp_step(params, state, x, y):
        # Each device differentiates its own copy of the parameters (`pcast` to varying),
        # so the local gradients are of its batch shard; `pmean` then averages them. (The
        # replicated parameters themselves would get the psum of the local gradients.)
        local = jax.lax.pcast(params, "data", to="varying")
        grads = jax.lax.pmean(jax.grad(_linear_loss)(local, x, y), "data")
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    sharded = jax.jit(
        jax.shard_map(
            dp_step, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=(P(), P())
        )
    )
    replicated = NamedSharding(mesh, P())
    dp = jax.device_put((params, tx.init(params)), replicated)
    ref = (params, tx.init(params))
    for x, y in batches:
        dp = sharded(*dp, jax.device_put(x, split), jax.device_put(y, split))
        ref = jax.jit(step)(*ref, x, y)
    x, y = jax.device_put(batches[0], split)
    assert {op for op, _ in _collectives(sharded.lower(*dp, x, y).compile())} == {"all-reduce"}
    for got, want in zip(jax.tree.leaves(dp), jax.tree.leaves(ref), strict=True):
        assert got.sharding.is_fully_replicated
        _assert_close(got, want)  # the eight partial gradients are summed in another order


def test_init_and_update_inside_shard_map_work_on_the_local_shards():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    tx = gbopt.adam(1e-2)
    params = jax.device_put(np.arange(16.0, dtype=np.float32), NamedSharding(mesh, P("data")))

    def local(p):
        state = tx.init(p)
        updates, state = tx.update(p, state, p)
        return gbopt.apply_updates(p, updates), state

    # the count must come out invariant across the mesh for `P()` to pass shard_map's check
    out_specs = (P("data"), gbopt.StepCountState(count=P(), inner_state=P("data")))
    sharded = jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=out_specs)
    new, state = jax.jit(sharded)(params)
    want_new, want_state = local(np.arange(16.0, dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(new), np.asarray(want_new))
    mu = gbopt.state_get(state, "mu")
    np.testing.assert_array_equal(np.asarray(mu), np.asarray(gbopt.state_get(want_state, "mu")))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_state_is_filled_exactly_whatever_the_parameters_hold(jit):
    """The fill is selected against the parameter, never computed from it (0 * inf is NaN)."""
    mesh = _mesh(AxisType.Auto)
    values = np.array([[1.0, -1.0, np.inf, -np.inf], [np.nan, -0.0, 3e38, -5e-45]] * 4, np.float32)
    params = {"w": jax.device_put(values, NamedSharding(mesh, P("x", "y")))}
    tx = gbopt.chain(gbopt.trace(0.9), gbopt.accumulate_square(initial_accumulator_value=0.1))
    trace_state, acc_state = (jax.jit(tx.init) if jit else tx.init)(params)
    zeros, filled = np.asarray(trace_state.trace["w"]), np.asarray(acc_state.nu["w"])
    assert np.all(zeros == 0) and not np.any(np.signbit(zeros))
    np.testing.assert_array_equal(filled, np.full(values.shape, np.float32(0.1)))
    assert acc_state.nu["w"].sharding == params["w"].sharding


def test_eager_count_is_committed_where_single_device_parameters_are():
    device = jax.devices()[3]
    params = {"w": jax.device_put(np.ones(3, np.float32), device)}
    state = gbopt.adam(1e-3).init(params)
    assert state.count.committed and state.count.devices() == {device}
    # uncommitted parameters leave the count uncommitted, as jnp.zeros would
    assert not gbopt.adam(1e-3).init({"w": jnp.ones(3)}).count.committed


# ZeRO stage 1 ---------------------------------------------------------------------------


def test_state_shardings_splits_the_largest_divisible_dimension():
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
    sds = jax.ShapeDtypeStruct
    state = {
        "matrix": sds((12, 16), jnp.float32),  # both divisible by 4: the larger, 16
        "tall": sds((24, 8), jnp.float32),
        "tie": sds((8, 8), jnp.float32),  # a tie: the leading dimension
        "odd": sds((6, 3), jnp.float32),  # nothing divisible: replicated
        "count": sds((), jnp.int32),
        "empty": (),
    }
    specs = jax.tree.map(lambda s: s.spec, gbopt.state_shardings(state, mesh, "data"))
    assert specs == {
        "matrix": P(None, "data"),
        "tall": P("data", None),
        "tie": P("data", None),
        "odd": P(None, None),
        "count": P(),
        "empty": (),
    }
    both = gbopt.state_shardings({"v": sds((16,), jnp.float32)}, mesh, ("data", "model"))
    assert both["v"].spec == P(("data", "model"))
    assert all(isinstance(s, NamedSharding) and s.mesh == mesh for s in jax.tree.leaves(both))


@pytest.mark.parametrize("abstract", [False, True], ids=["state", "eval_shape"])
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_state_shardings_adds_the_data_axis_to_model_parallel_state(axis_type, abstract):
    """On a 2-D mesh, state sharded over `model` is split over `data` as well."""
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type, axis_type))
    params = {
        "w": jax.device_put(np.ones((8, 6), np.float32), NamedSharding(mesh, P(None, "model"))),
        # 6 is not divisible by 4; 8 / 2 = 4 per model shard is
        "v": jax.device_put(np.ones((6, 8), np.float32), NamedSharding(mesh, P(None, "model"))),
        "done": jax.device_put(np.ones((8,), np.float32), NamedSharding(mesh, P("data"))),
    }
    init = gbopt.momentum(1e-2).init
    state = jax.eval_shape(init, params) if abstract else init(params)
    specs = jax.tree.map(lambda s: s.spec, gbopt.state_shardings(state, mesh, "data"))[1].trace
    if abstract and axis_type == AxisType.Auto:
        # eval_shape drops Auto shardings: taken as replicated over `model` (documented)
        assert specs == {"w": P("data", None), "v": P(None, "data"), "done": P("data")}
    else:
        assert specs == {
            "w": P("data", "model"),
            "v": P(None, ("model", "data")),
            "done": P("data"),
        }


def test_state_shardings_errors_name_the_axis_and_the_path():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    state = {"mu": jax.ShapeDtypeStruct((8,), jnp.float32)}
    with pytest.raises(
        ValueError, match=r"`axis_name` must name axes of the mesh, \('data',\); got 'batch'"
    ):
        gbopt.state_shardings(state, mesh, "batch")
    other = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Auto, AxisType.Auto))
    sharded = {"mu": jax.device_put(np.ones(8, np.float32), NamedSharding(other, P("x")))}
    with pytest.raises(ValueError, match=r"state\['mu'\] is sharded over a mesh with axes"):
        gbopt.state_shardings(sharded, mesh, "data")


def _per_device_bytes(tree) -> dict:
    total = collections.Counter()
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            total[shard.device] += shard.data.nbytes
    return dict(total)


ZERO_CASES = [pytest.param(name, AxisType.Auto, id=name) for name in NAMES]
ZERO_CASES.append(pytest.param("adam", AxisType.Explicit, id="adam-explicit"))


@pytest.mark.parametrize(("name", "axis_type"), ZERO_CASES)
def test_zero_stage_1_same_results_and_state_memory_divided_by_devices(name, axis_type):
    tx = OPTIMIZERS[name]()
    mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
    rng = np.random.default_rng(4)
    host = {
        "w1": rng.normal(size=(16, 24)).astype(np.float32),
        "b1": rng.normal(size=(24,)).astype(np.float32),
        "w2": rng.normal(size=(24, 8)).astype(np.float32),
    }
    replicated = NamedSharding(mesh, P())
    state_sh = gbopt.state_shardings(jax.eval_shape(tx.init, host), mesh, "data")

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    zero_step = jax.jit(
        step, in_shardings=(replicated, state_sh, replicated), out_shardings=(replicated, state_sh)
    )
    params = jax.device_put(host, replicated)
    state = jax.jit(tx.init, out_shardings=state_sh)(params)
    full_state = tx.init(params)  # the default: state replicated like the parameters
    ref = (host, tx.init(host))
    for seed in range(3):
        grads = {
            k: np.asarray(np.random.default_rng(seed).normal(size=v.shape), v.dtype)
            for k, v in host.items()
        }
        params, state = zero_step(params, state, grads)
        ref = jax.jit(step)(*ref, grads)
    for got, want in zip(jax.tree.leaves((params, state)), jax.tree.leaves(ref), strict=True):
        _assert_close(got, want)
    assert all(p.sharding.is_fully_replicated for p in jax.tree.leaves(params))

    if not jax.tree.leaves(full_state):  # sgd keeps no state
        assert jax.tree.structure(state) == jax.tree.structure(full_state)
        return
    zero, full = _per_device_bytes(state), _per_device_bytes(full_state)
    counts = sum(x.nbytes for x in jax.tree.leaves(full_state) if x.ndim == 0)
    arrays = sum(x.nbytes for x in jax.tree.leaves(full_state) if x.ndim > 0)
    assert set(zero) == set(full) == set(mesh.devices.flat)
    assert set(full.values()) == {arrays + counts}
    assert set(zero.values()) == {arrays // 8 + counts}  # every array split, counts replicated
    print(
        f"\nZeRO-1 {name}: state per device {arrays + counts} B replicated -> "
        f"{arrays // 8 + counts} B sharded over 8 devices"
    )
