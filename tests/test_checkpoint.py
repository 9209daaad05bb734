"""Optimizer state in checkpoints: stable named structure, flax.serialization and Orbax
round trips that resume bit for bit, and restore_state's checks."""

from __future__ import annotations

import pathlib

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import OPTIMIZERS

import gbopt
from gbopt import schedules

LABELS = gbopt.label_by_path(lambda path, leaf: "vector" if leaf.ndim == 1 else "matrix")

# Every optimizer of the seed and every combinator, with a state worth restoring.
CASES = {
    **OPTIMIZERS,
    "chain": lambda: gbopt.chain(
        gbopt.clip_by_global_norm(1.0), gbopt.add_decayed_weights(1e-2), gbopt.momentum(1e-2)
    ),
    "divide": lambda: gbopt.chain(
        gbopt.divide(
            gbopt.ema(0.9),
            gbopt.chain(gbopt.accumulate_square(0.99), gbopt.sqrt(), gbopt.add(1e-8)),
        ),
        gbopt.scale(-1e-2),
    ),
    "with_step_count": lambda: gbopt.with_step_count(
        lambda t: gbopt.chain(
            gbopt.ema(0.9),
            gbopt.bias_correction(0.9, step=t),
            gbopt.scale_by_learning_rate(schedules.cosine_decay(1e-2, 20), step=t),
        )
    ),
    "schedule_own_count": lambda: gbopt.momentum(schedules.linear(1e-2, 1e-3, 10)),
    "inject_hyperparams": lambda: gbopt.inject_hyperparams(gbopt.adam)(
        learning_rate=schedules.warmup_cosine_decay(0.0, 1e-2, 3, 20), b2=0.99
    ),
    "multi_transform": lambda: gbopt.multi_transform(
        {"matrix": gbopt.adam(1e-2), "vector": gbopt.rmsprop_nesterov(1e-3)}, LABELS
    ),
    "masked_and_freeze": lambda: gbopt.chain(
        gbopt.masked(gbopt.adagrad(1e-1), {"w": True, "b": False, "e": True}),
        gbopt.freeze({"w": False, "b": False, "e": True}),
    ),
    "optax_inside": lambda: gbopt.chain(optax.scale_by_adam(), gbopt.scale_by_learning_rate(1e-2)),
}

STEPS_BEFORE, STEPS_AFTER = 4, 3


def _params():
    rng = np.random.default_rng(2)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "e": jnp.asarray(rng.normal(size=(2,)), jnp.bfloat16),
    }


def _loss(params, k):
    return sum(
        jnp.sum(jnp.sin(p.astype(jnp.float32) * (1 + k / 10)) ** 2) for p in jax.tree.leaves(params)
    )


def _stepper(tx):
    @jax.jit
    def step(params, state, k):
        updates, state = tx.update(jax.grad(_loss)(params, k), state, params)
        return gbopt.apply_updates(params, updates), state

    return step


def _run(step, params, state, start, steps):
    for k in range(start, start + steps):
        params, state = step(params, state, jnp.float32(k))
    return params, state


def _assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert jnp.result_type(x) == jnp.result_type(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def runs():
    """For each case: the state after STEPS_BEFORE and the uninterrupted run's end."""
    out = {}
    for name, make in CASES.items():
        tx = make()
        step = _stepper(tx)
        params = _params()
        mid = _run(step, params, tx.init(params), 0, STEPS_BEFORE)
        end = _run(step, *mid, STEPS_BEFORE, STEPS_AFTER)
        out[name] = (tx, step, mid, end)
    return out


def _resume(runs, name, restore):
    tx, step, (params, state), end = runs[name]
    template = (_params(), tx.init(_params()))
    restored = restore(template, {"params": params, "opt_state": state})
    compiled = step._cache_size()
    resumed = _run(step, *restored, STEPS_BEFORE, STEPS_AFTER)
    _assert_bitwise(resumed, end)
    assert step._cache_size() == compiled  # the restored state reuses the compiled step


# ---------------------------------------------------------------------------------------
# Structure.


def _check_named(node, path="state"):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        for field in node._fields:
            _check_named(getattr(node, field), f"{path}.{field}")
    elif isinstance(node, (tuple, list)):
        for i, x in enumerate(node):
            _check_named(x, f"{path}[{i}]")
    elif isinstance(node, dict):
        for k, x in node.items():
            _check_named(x, f"{path}[{k!r}]")
    else:
        assert isinstance(node, jax.Array), f"{path} is {type(node).__name__}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_is_arrays_in_named_containers_and_keeps_its_structure(name):
    tx = CASES[name]()
    params = _params()
    state = tx.init(params)
    _check_named(state)
    after = jax.eval_shape(lambda s: tx.update(params, s, params)[1], state)
    assert jax.tree.structure(after) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(state), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)


# ---------------------------------------------------------------------------------------
# flax.serialization.


def _flax_with_template(template, saved):
    data = flax.serialization.to_bytes(saved)
    params, opt_state = template
    restored = flax.serialization.from_bytes({"params": params, "opt_state": opt_state}, data)
    return (
        gbopt.restore_state(params, restored["params"]),
        gbopt.restore_state(opt_state, restored["opt_state"]),
    )


def _flax_raw(template, saved):
    raw = flax.serialization.msgpack_restore(flax.serialization.to_bytes(saved))
    params, opt_state = template
    return gbopt.restore_state(params, raw["params"]), gbopt.restore_state(
        opt_state, raw["opt_state"]
    )


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("restore", [_flax_with_template, _flax_raw], ids=["template", "raw"])
def test_flax_serialization_round_trip_resumes_bitwise(runs, name, restore):
    _resume(runs, name, restore)


# ---------------------------------------------------------------------------------------
# Orbax: every case in one checkpoint, restored once with and once without a target.


@pytest.fixture(scope="module")
def orbax_restored(runs, tmp_path_factory):
    saved = {
        name: {"params": params, "opt_state": state}
        for name, (_, _, (params, state), _) in runs.items()
    }
    path = tmp_path_factory.mktemp("orbax") / "ckpt"
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, saved)
        checkpointer.wait_until_finished()
        raw = checkpointer.restore(path)
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, saved)
        with_target = checkpointer.restore(path, target)
    return {"raw": raw, "target": with_target}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["raw", "target"])
def test_orbax_round_trip_resumes_bitwise(runs, orbax_restored, name, mode):
    def restore(template, saved):
        del saved
        entry = orbax_restored[mode][name]
        params, opt_state = template
        return (
            gbopt.restore_state(params, entry["params"]),
            gbopt.restore_state(opt_state, entry["opt_state"]),
        )

    _resume(runs, name, restore)


# ---------------------------------------------------------------------------------------
# restore_state's checks.


def _saved_adam_raw():
    params = _params()
    tx = gbopt.adam(1e-2)
    _, state = _run(_stepper(tx), params, tx.init(params), 0, 2)
    return flax.serialization.msgpack_restore(flax.serialization.to_bytes(state))


def test_restoring_into_another_optimizer_names_the_first_path():
    raw = _saved_adam_raw()
    template = gbopt.momentum(1e-2).init(_params())
    with pytest.raises(
        ValueError,
        match=r"does not have the structure of the template: the template has an array at "
        r"\[1\]\.trace\['b'\] that the restored state lacks .*the restored state has an array "
        r"at \['count'\] that the template lacks",
    ):
        gbopt.restore_state(template, raw)


def test_restoring_into_other_shapes_names_the_path_and_both_shapes():
    raw = _saved_adam_raw()
    params = dict(_params(), w=jnp.zeros((3, 5)))
    with pytest.raises(
        ValueError,
        match=r"restored state\.inner_state\[0\]\.numerator\[0\]\.mu\['w'\] has shape \(3, 4\) "
        r"but the template there has shape \(3, 5\)\. Restore into a template built by the same",
    ):
        gbopt.restore_state(gbopt.adam(1e-2).init(params), raw)


def test_restoring_other_dtypes_names_the_path_and_both_dtypes():
    raw = _saved_adam_raw()
    raw["count"] = raw["count"].astype(np.int64)
    template = gbopt.adam(1e-2).init(_params())
    with pytest.raises(
        ValueError,
        match=r"restored state\.count has dtype int64 but the template there has dtype int32",
    ):
        gbopt.restore_state(template, raw)
    raw = _saved_adam_raw()
    raw["inner_state"]["0"]["denominator"]["0"]["nu"]["e"] = np.zeros(2, np.float16)
    with pytest.raises(
        ValueError, match=r"\.nu\['e'\] has dtype float16 but the template there has dtype float32"
    ):
        gbopt.restore_state(template, raw)


def test_abstract_template_and_sharding_are_honoured():
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    params = {"w": jax.device_put(jnp.arange(16.0).reshape(8, 2), sharding)}
    tx = gbopt.adam(1e-2)
    state = tx.init(params)
    raw = flax.serialization.msgpack_restore(flax.serialization.to_bytes(state))
    restored = gbopt.restore_state(state, raw)
    mu = gbopt.state_get(restored, "mu")["w"]
    assert mu.sharding == gbopt.state_get(state, "mu")["w"].sharding
    assert isinstance(restored, gbopt.StepCountState)
    abstract = gbopt.restore_state(jax.eval_shape(tx.init, params), raw)
    _assert_bitwise(abstract, state)


# ---------------------------------------------------------------------------------------
# Format 0: states written by gbopt 0.1.0 (main at 1b58023, before state was reached by
# name) restore into today's optimizers and resume bit for bit. The files were written by
# that version from CASES, after STEPS_BEFORE steps, with flax.serialization's msgpack.
# gbopt 0.1.0 stored every statistic of the bfloat16 leaf `e` in float32; today a first
# moment (`mu`, the momentum `trace`) follows the parameters' dtype, so the optimizers
# that keep one are built with the former storage, float32, given explicitly.

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "checkpoints_v0"
F32 = jnp.float32
FORMAT_0 = {
    **CASES,
    "momentum": lambda: gbopt.momentum(1e-2, momentum=0.9, accumulator_dtype=F32),
    "nesterov": lambda: gbopt.nesterov(1e-2, momentum=0.9, accumulator_dtype=F32),
    "rmsprop_nesterov": lambda: gbopt.rmsprop_nesterov(1e-3, accumulator_dtype=F32),
    "adam": lambda: gbopt.adam(1e-2, mu_dtype=F32),
    "chain": lambda: gbopt.chain(
        gbopt.clip_by_global_norm(1.0),
        gbopt.add_decayed_weights(1e-2),
        gbopt.momentum(1e-2, accumulator_dtype=F32),
    ),
    "divide": lambda: gbopt.chain(
        gbopt.divide(
            gbopt.ema(0.9, dtype=F32),
            gbopt.chain(gbopt.accumulate_square(0.99), gbopt.sqrt(), gbopt.add(1e-8)),
        ),
        gbopt.scale(-1e-2),
    ),
    "with_step_count": lambda: gbopt.with_step_count(
        lambda t: gbopt.chain(
            gbopt.ema(0.9, dtype=F32),
            gbopt.bias_correction(0.9, step=t),
            gbopt.scale_by_learning_rate(schedules.cosine_decay(1e-2, 20), step=t),
        )
    ),
    "schedule_own_count": lambda: gbopt.momentum(
        schedules.linear(1e-2, 1e-3, 10), accumulator_dtype=F32
    ),
    "inject_hyperparams": lambda: gbopt.inject_hyperparams(gbopt.adam)(
        learning_rate=schedules.warmup_cosine_decay(0.0, 1e-2, 3, 20), b2=0.99, mu_dtype=F32
    ),
    "multi_transform": lambda: gbopt.multi_transform(
        {
            "matrix": gbopt.adam(1e-2, mu_dtype=F32),
            "vector": gbopt.rmsprop_nesterov(1e-3, accumulator_dtype=F32),
        },
        LABELS,
    ),
}


def _format_0(name):
    return flax.serialization.msgpack_restore((FIXTURES / f"{name}.msgpack").read_bytes())


def _ulps_apart(a, b):
    """The largest distance in units in the last place between two trees of the same
    structure and dtypes (0 for integer leaves that are equal; any float width)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    worst = 0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype
        if not jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_array_equal(x, y)
            continue
        bits = {2: np.int16, 4: np.int32, 8: np.int64}[x.dtype.itemsize]
        low = np.iinfo(bits).min

        def ordered(v, bits=bits, low=low):  # the float's bit pattern as an ordered integer
            i = v.view(bits).astype(np.int64)
            return np.where(i < 0, low - i, i)

        worst = max(worst, int(np.max(np.abs(ordered(x) - ordered(y)), initial=0)))
    return worst


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_checkpoint_of_format_0_restores_and_resumes_bit_for_bit(runs, name):
    """The files hold the state after STEPS_BEFORE steps as the machine that wrote them
    computed it. Where this machine computes the same bits, the resumed run is the
    uninterrupted one bit for bit. XLA:CPU's code differs between processors (AVX2 against
    AVX-512): on one with another rounding in some element, the restored state is still
    within an ulp of this machine's, leaf by leaf at every name (different statistics are
    orders of magnitude apart, so a leaf restored to the wrong name fails), and the resumed
    run stays within two."""
    raw = _format_0(name)
    if FORMAT_0[name] is CASES[name]:
        tx, step, mid, end = runs[name]
    else:  # the uninterrupted run with float32 first moments
        tx = FORMAT_0[name]()
        step = _stepper(tx)
        mid = _run(step, _params(), tx.init(_params()), 0, STEPS_BEFORE)
        end = _run(step, *mid, STEPS_BEFORE, STEPS_AFTER)
    params = gbopt.restore_state(_params(), raw["params"])
    state = gbopt.restore_state(tx.init(_params()), raw["opt_state"])
    resumed = _run(step, params, state, STEPS_BEFORE, STEPS_AFTER)
    apart = _ulps_apart((params, state), mid)
    if apart == 0:
        _assert_bitwise(resumed, end)
    else:
        assert apart <= 1, f"the restored state is {apart} ulps from this machine's"
        assert _ulps_apart(resumed, end) <= 2


def test_ulps_apart_counts_units_in_the_last_place():
    one = np.float32(1.0)
    up = np.nextafter(one, np.float32(2.0))
    down = np.nextafter(one, np.float32(0.0))
    assert _ulps_apart({"x": jnp.asarray([one])}, {"x": jnp.asarray([up])}) == 1
    assert _ulps_apart({"x": jnp.asarray([down])}, {"x": jnp.asarray([up])}) == 2
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    assert _ulps_apart(jnp.asarray([tiny]), jnp.asarray([-tiny])) == 2  # across zero
    e = jnp.asarray([1.0, 1.5], jnp.bfloat16)
    assert _ulps_apart(e, e) == 0
    assert _ulps_apart(e, e + jnp.asarray([0.0, 2.0**-7], jnp.bfloat16)) == 1
    assert _ulps_apart(jnp.float32(1.0), jnp.float32(1.0 + 2.0**-20)) == 8


@pytest.mark.parametrize("name", sorted(CASES))
def test_format_0_first_moments_in_todays_default_are_refused_with_the_fix(name):
    """Where today's default stores `e`'s first moment in bfloat16, the message says how."""
    raw = _format_0(name)
    template = CASES[name]().init(_params())
    if FORMAT_0[name] is CASES[name]:
        gbopt.restore_state(template, raw["opt_state"])  # nothing to narrow
        return
    with pytest.raises(
        ValueError,
        match=r"\['e'\] has dtype float32 but the template there has dtype bfloat16.*"
        r"build the optimizer with that storage .*mu_dtype=jnp\.float32",
    ):
        gbopt.restore_state(template, raw["opt_state"])


def _trained_adam_state():
    params = _params()
    tx = gbopt.adam(1e-2)
    state = tx.init(params)
    for k in range(2):
        _, state = tx.update(jax.grad(_loss)(params, k), state, params)
    return tx, params, state


def _replace_leaf(state, field, key, fn):
    """``state`` with ``fn`` applied to the ``key`` entry of the statistic ``field``."""
    old = gbopt.state_get(state, field)
    return gbopt.state_set(state, **{field: {**old, key: fn(old[key])}})


@pytest.mark.parametrize(
    ("field", "key", "fn", "message"),
    [
        ("mu", "w", lambda x: x.at[0, 1].set(jnp.nan), r"a non-finite value .* at \S*mu\S*\['w'\]"),
        ("nu", "b", lambda x: x.at[2].set(jnp.inf), r"a non-finite value .* at \S*nu\S*\['b'\]"),
        ("nu", "w", lambda x: x.at[0, 0].set(-1e-3), r"a negative second moment .*\S*nu\S*\['w'\]"),
    ],
)
def test_restore_state_refuses_values_no_healthy_state_holds(field, key, fn, message):
    tx, params, state = _trained_adam_state()
    bad = _replace_leaf(state, field, key, fn)
    template = tx.init(params)
    with pytest.raises(ValueError, match=message + r".*check_values=False"):
        gbopt.restore_state(template, bad)
    # The same through a plain state dict (what flax's msgpack_restore returns).
    with pytest.raises(ValueError, match=message):
        gbopt.restore_state(template, flax.serialization.to_state_dict(bad))
    # The documented opt-out restores it as it is.
    restored = gbopt.restore_state(template, bad, check_values=False)
    got = np.asarray(gbopt.state_get(restored, field)[key], np.float64)
    want = np.asarray(gbopt.state_get(bad, field)[key], np.float64)
    np.testing.assert_array_equal(got, want)


def test_restore_state_refuses_a_negative_count_and_accepts_a_healthy_state():
    tx, params, state = _trained_adam_state()
    template = tx.init(params)
    bad = state._replace(count=jnp.asarray(-3, jnp.int32))
    with pytest.raises(ValueError, match=r"a negative step count at \.count"):
        gbopt.restore_state(template, bad)
    restored = gbopt.restore_state(template, state)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), restored, state))
    with pytest.raises(TypeError, match=r"`check_values` must be True or False"):
        gbopt.restore_state(template, state, check_values="no")
