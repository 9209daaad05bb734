"""Hyperparameters as data: inject_hyperparams and set_hyperparams."""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gbopt

# Each optimizer of the seed with every numeric hyperparameter given.
FACTORIES = {
    "sgd": (gbopt.sgd, {"learning_rate": 0.05}),
    "momentum": (gbopt.momentum, {"learning_rate": 0.05, "momentum": 0.9}),
    "nesterov": (gbopt.nesterov, {"learning_rate": 0.05, "momentum": 0.8}),
    "adagrad": (gbopt.adagrad, {"learning_rate": 0.1, "eps": 1e-7}),
    "rmsprop": (gbopt.rmsprop, {"learning_rate": 0.01, "decay": 0.9, "eps": 1e-6}),
    "rmsprop_nesterov": (
        gbopt.rmsprop_nesterov,
        {"learning_rate": 1e-3, "decay": 0.9, "momentum": 0.9, "eps": 1e-6},
    ),
    "adam": (gbopt.adam, {"learning_rate": 0.01, "b1": 0.9, "b2": 0.999, "eps": 1e-8}),
}


def _params(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), dtype),
        "b": jnp.asarray(rng.normal(size=(4,)), dtype),
    }


def _grads(params, k):
    # A deterministic, step-dependent gradient of each leaf's shape.
    return jax.tree.map(lambda p: jnp.sin(p * (k + 1) + 0.3).astype(p.dtype), params)


def _run(tx, params, steps, update_kwargs=None):
    state = tx.init(params)
    trajectory = []
    for k in range(steps):
        updates, state = tx.update(_grads(params, k), state, params, **(update_kwargs or {}))
        params = gbopt.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory, state


# ---------------------------------------------------------------------------------------
# The injected optimizer is the optimizer.


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_injected_equals_factory_with_array_hyperparameters_bitwise(name):
    # Injected hyperparameters are float32 arrays: the factory built from the same float32
    # arrays must give the same bits, step after step.
    factory, hps = FACTORIES[name]
    params = _params()
    injected, _ = _run(gbopt.inject_hyperparams(factory)(**hps), params, 5)
    direct, _ = _run(factory(**{k: jnp.float32(v) for k, v in hps.items()}), params, 5)
    for a, b in zip(injected, direct, strict=True):
        chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_injected_equals_factory_in_float64(name):
    # In float64 the injected arrays are float64, so the rule is the factory's to round-off
    # (Python floats take a float64 path at trace time, arrays one at run time).
    factory, hps = FACTORIES[name]
    with jax.enable_x64(True):
        params = _params(jnp.float64)
        injected, state = _run(gbopt.inject_hyperparams(factory)(**hps), params, 10)
        direct, _ = _run(factory(**hps), params, 10)
        assert all(v.dtype == jnp.float64 for v in state.hyperparams.values())
        for a, b in zip(injected, direct, strict=True):
            chex.assert_trees_all_close(a, b, rtol=1e-14, atol=0)


def test_state_holds_every_numeric_hyperparameter_in_signature_order():
    tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3, b1=0.8)
    state = tx.init(_params())
    assert isinstance(state, gbopt.InjectHyperparamsState)
    assert list(state.hyperparams) == ["learning_rate", "b1", "b2", "eps"]  # defaults included
    np.testing.assert_array_equal(
        [state.hyperparams[k] for k in state.hyperparams],
        np.asarray([1e-3, 0.8, 0.999, 1e-8], np.float32),
    )
    for value in state.hyperparams.values():
        assert value.dtype == jnp.float32 and value.shape == () and not value.weak_type
    assert state.count.dtype == jnp.int32 and int(state.count) == 0


def test_positional_arguments_are_bound_by_name():
    state = gbopt.inject_hyperparams(gbopt.momentum)(0.1, 0.5).init(_params())
    assert {k: float(v) for k, v in state.hyperparams.items()} == {
        "learning_rate": np.float32(0.1),
        "momentum": 0.5,
    }


def test_bool_flags_and_static_args_are_not_hyperparameters():
    trace = gbopt.inject_hyperparams(gbopt.trace)(0.9, nesterov=True)
    assert list(trace.init(_params()).hyperparams) == ["decay"]

    # A callable that is not a schedule must be named in static_args.
    no_bias = lambda p: {"w": True, "b": False}  # noqa: E731
    tx = gbopt.inject_hyperparams(gbopt.add_decayed_weights, static_args="mask")(0.5, mask=no_bias)
    params = _params()
    state = tx.init(params)
    assert list(state.hyperparams) == ["weight_decay"]
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, state, params)
    np.testing.assert_array_equal(updates["w"], np.float32(0.5) * params["w"])
    np.testing.assert_array_equal(updates["b"], 0.0)


def test_a_storage_dtype_is_passed_as_it_is_not_called_as_a_schedule():
    """jnp.float32 is callable; as `mu_dtype` it is a dtype, not a schedule."""
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    for dtype in (jnp.float32, np.float32, jnp.dtype("float32"), "float32"):
        tx = gbopt.inject_hyperparams(gbopt.adam)(1e-3, mu_dtype=dtype)
        state = tx.init(params)
        assert "mu_dtype" not in state.hyperparams
        assert gbopt.state_get(state, "mu")["w"].dtype == jnp.float32
        _, state = tx.update(params, state, params)
        assert gbopt.state_get(state, "mu")["w"].dtype == jnp.float32


def test_hyperparam_dtype_is_honoured_and_float64_params_get_float64():
    params = _params(jnp.bfloat16)
    state = gbopt.inject_hyperparams(gbopt.adam)(1e-3).init(params)
    assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype(jnp.float32)}
    state = gbopt.inject_hyperparams(gbopt.sgd, hyperparam_dtype=jnp.bfloat16)(1e-3).init(params)
    assert state.hyperparams["learning_rate"].dtype == jnp.bfloat16
    # Asked for, bfloat16 rounds b2 = 0.999 to 1.0, and the error says why.
    bf16_adam = gbopt.inject_hyperparams(gbopt.adam, hyperparam_dtype=jnp.bfloat16)(1e-3)
    with pytest.raises(ValueError, match=r"`b2` must be in \[0, 1\).* stored in bfloat16 .*b2 = 1"):
        bf16_adam.init(params)
    with jax.enable_x64(True):
        state = gbopt.inject_hyperparams(gbopt.adam)(1e-3).init(_params(jnp.float64))
        assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype(jnp.float64)}


def test_works_with_optax_factories_and_equals_optax_inject_hyperparams():
    params = _params()
    ours, s1 = _run(gbopt.inject_hyperparams(optax.adam)(learning_rate=0.01), params, 4)
    theirs, s2 = _run(optax.inject_hyperparams(optax.adam)(learning_rate=0.01), params, 4)
    for a, b in zip(ours, theirs, strict=True):
        chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal(s1.hyperparams, s2.hyperparams)


# ---------------------------------------------------------------------------------------
# Schedules.


def test_schedule_is_evaluated_at_the_count_and_its_value_stored():
    schedule = gbopt.schedules.linear(1.0, 0.0, transition_steps=4)
    tx = gbopt.inject_hyperparams(gbopt.sgd)(learning_rate=schedule)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    np.testing.assert_array_equal(state.hyperparams["learning_rate"], 1.0)
    for k in range(6):
        updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        np.testing.assert_array_equal(updates["w"], -schedule(k))
        np.testing.assert_array_equal(state.hyperparams["learning_rate"], schedule(k))
        assert int(state.count) == k + 1


def test_any_numeric_hyperparameter_can_be_scheduled():
    # b1 of Adam follows a schedule; the result equals Adam rebuilt each step with b1_t
    # (a one-step Adam from the carried state).
    b1 = gbopt.schedules.linear(0.5, 0.9, transition_steps=3)
    tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=0.1, b1=b1)
    params = _params()
    state = tx.init(params)
    for k in range(4):
        # The injected count is the optimizer's only one: a standalone Adam at this step
        # has the same statistics under its own count.
        inner = gbopt.StepCountState(state.count, state.inner_state)
        g = _grads(params, k)
        updates, state = tx.update(g, state, params)
        expected, _ = gbopt.adam(
            jnp.float32(0.1), b1=jnp.float32(b1(k)), b2=jnp.float32(0.999)
        ).update(g, inner, params)
        chex.assert_trees_all_equal(updates, expected)
        np.testing.assert_array_equal(state.hyperparams["b1"], np.float32(b1(k)))


# ---------------------------------------------------------------------------------------
# Changing hyperparameters without recompiling.


def test_set_hyperparams_between_steps_never_retraces():
    tx = gbopt.inject_hyperparams(gbopt.momentum)(learning_rate=0.1, momentum=0.9)
    params = _params()
    g = _grads(params, 0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(g, state, params)
        return gbopt.apply_updates(params, updates), state

    # NumPy float32 reference of the book's momentum (lr inside the velocity), with the
    # learning rate and the momentum changed between steps.
    schedule = [(0.1, 0.9), (0.05, 0.9), (0.05, 0.5), (0.2, 0.0), (1e-3, 0.99)]
    state = tx.init(params)
    p_ref = {k: np.asarray(v) for k, v in params.items()}
    v_ref = {k: np.zeros_like(v) for k, v in p_ref.items()}
    for lr, mu in schedule:
        state = gbopt.set_hyperparams(state, learning_rate=lr, momentum=mu)
        params, state = step(params, state)
        for k in p_ref:
            v_ref[k] = np.float32(mu) * v_ref[k] + np.asarray(g[k]) * -np.float32(lr)
            p_ref[k] = p_ref[k] + v_ref[k]
        chex.assert_trees_all_close(params, p_ref, rtol=1e-6)
        np.testing.assert_array_equal(state.hyperparams["learning_rate"], np.float32(lr))


def test_set_hyperparams_reaches_a_nested_injected_state_and_keeps_dtype():
    tx = gbopt.chain(
        gbopt.clip_by_global_norm(1.0), gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3)
    )
    state = tx.init(_params(jnp.bfloat16))
    new = gbopt.set_hyperparams(state, learning_rate=np.float64(3e-4), b2=0.99)
    assert new[1].hyperparams["learning_rate"].dtype == jnp.float32
    np.testing.assert_array_equal(new[1].hyperparams["b2"], np.float32(0.99))
    np.testing.assert_array_equal(state[1].hyperparams["b2"], np.float32(0.999))  # not mutated
    assert jax.tree.structure(new) == jax.tree.structure(state)
    assert optax.tree_utils.tree_get(new, "learning_rate") == np.float32(3e-4)


def test_assigning_a_python_float_in_the_dict_works_like_optax():
    tx = gbopt.inject_hyperparams(gbopt.sgd)(learning_rate=0.1)
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    state.hyperparams["learning_rate"] = 0.5  # optax users' habit
    updates, state = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_array_equal(updates["w"], -0.5)
    lr = state.hyperparams["learning_rate"]
    assert lr.dtype == jnp.float32 and not lr.weak_type


# ---------------------------------------------------------------------------------------
# Low precision (optax issue #1414).


def test_bfloat16_params_keep_b2_in_float32_and_nu_decays():
    # bfloat16(0.999) == 1.0: with b2 stored in the parameters' dtype, nu would never decay
    # and 1 - b2**t would be 0 (NaN at the first step). Stored in float32 it decays.
    params = {"w": jnp.zeros((4,), jnp.bfloat16)}
    assert jnp.bfloat16(0.999) == 1.0  # the trap
    tx = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=1e-3)
    state = tx.init(params)
    assert state.hyperparams["b2"].dtype == jnp.float32
    ones = {"w": jnp.ones((4,), jnp.bfloat16)}
    updates, state = tx.update(ones, state, params)
    # Adam's first step is lr * sign(g), here in bfloat16.
    np.testing.assert_array_equal(updates["w"], jnp.full((4,), -1e-3, jnp.bfloat16))
    zeros = {"w": jnp.zeros((4,), jnp.bfloat16)}
    step = jax.jit(tx.update)
    for _ in range(100):
        updates, state = step(zeros, state, params)
        assert np.all(np.isfinite(np.asarray(updates["w"], np.float32)))
    nu = gbopt.state_get(state, "nu")["w"]
    b2 = float(np.float32(0.999))
    expected = (1 - b2) * b2**100  # float64 reference of the stored b2
    np.testing.assert_allclose(np.asarray(nu), expected, rtol=2e-6)
    assert abs(float(nu[0]) - 1e-3) > 9e-5  # b2 rounded to 1.0 would leave nu at 1e-3


# ---------------------------------------------------------------------------------------
# Hyperparameters are data: vmap and grad.


def _quadratic(params):
    a = jnp.asarray([[2.0, 0.3], [0.3, 0.5]], params["x"].dtype)
    return 0.5 * params["x"] @ a @ params["x"] + jnp.sum(jnp.cos(params["x"]))


def _train(tx, hyperparams, steps=15, dtype=jnp.float32):
    params = {"x": jnp.asarray([1.5, -2.0], dtype)}
    state = gbopt.set_hyperparams(tx.init(params), **hyperparams)

    def body(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(_quadratic)(params), state, params)
        return (gbopt.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(body, (params, state), length=steps)
    return _quadratic(params)


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_vmap_over_learning_rates_equals_separate_runs(name):
    factory, hps = FACTORIES[name]
    tx = gbopt.inject_hyperparams(factory)(**hps)
    lrs = jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2, 0.1], jnp.float32)
    sweep = jax.jit(jax.vmap(lambda lr: _train(tx, {"learning_rate": lr})))(lrs)
    single = jax.jit(lambda lr: _train(tx, {"learning_rate": lr}))
    separate = jnp.stack([single(lr) for lr in lrs])
    np.testing.assert_array_equal(sweep, separate)
    assert len(np.unique(np.asarray(sweep))) == len(lrs)  # the runs differ


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_hypergradient_matches_central_finite_differences(name):
    factory, hps = FACTORIES[name]
    with jax.enable_x64(True):
        tx = gbopt.inject_hyperparams(factory)(**hps)
        names = [k for k in hps if k != "eps"]
        base = {k: jnp.float64(hps[k]) for k in names}

        def loss(h):
            return _train(tx, h, dtype=jnp.float64)

        grads = jax.jit(jax.grad(loss))(base)
        for k in names:
            h = 1e-6 * max(abs(hps[k]), 1e-3)
            up, down = dict(base), dict(base)
            up[k], down[k] = base[k] + h, base[k] - h
            fd = (loss(up) - loss(down)) / (2 * h)
            assert abs(float(grads[k])) > 1e-6, (k, grads[k])
            np.testing.assert_allclose(float(grads[k]), float(fd), rtol=1e-6, err_msg=k)


# ---------------------------------------------------------------------------------------
# Errors.


def test_errors_at_build_name_the_argument():
    with pytest.raises(TypeError, match=r"`factory` must be a function .*not gbopt.adam\(1e-3\)"):
        gbopt.inject_hyperparams(gbopt.adam(1e-3))
    with pytest.raises(ValueError, match=r"`static_args` names \['lr'\], which adam does not take"):
        gbopt.inject_hyperparams(gbopt.adam, static_args=["lr"])
    with pytest.raises(TypeError, match=r"`hyperparam_dtype` must be a floating dtype .* int32"):
        gbopt.inject_hyperparams(gbopt.adam, hyperparam_dtype=jnp.int32)
    with pytest.raises(
        TypeError, match=r"inject_hyperparams\(adam\)\(...\): .*keyword argument 'lr'"
    ):
        gbopt.inject_hyperparams(gbopt.adam)(1e-3, lr=1e-3)
    # Values are checked when the transform is built, by the factory's own checks.
    with pytest.raises(ValueError, match=r"`b2` must be in \[0, 1\)"):
        gbopt.inject_hyperparams(gbopt.adam)(1e-3, b2=1.5)
    with pytest.raises(ValueError, match=r"`learning_rate` must be a finite number >= 0"):
        gbopt.inject_hyperparams(gbopt.sgd)(gbopt.schedules.constant(-1.0))


def test_set_hyperparams_errors():
    params = _params()
    state = gbopt.inject_hyperparams(gbopt.adam)(1e-3).init(params)
    with pytest.raises(TypeError, match=r"at least one hyperparameter"):
        gbopt.set_hyperparams(state)
    with pytest.raises(
        ValueError, match=r"`lr` is not an injected hyperparameter .*'learning_rate'"
    ):
        gbopt.set_hyperparams(state, lr=1e-4)
    with pytest.raises(
        ValueError, match=r"`learning_rate` has shape \(2,\) but the stored value has shape \(\)"
    ):
        gbopt.set_hyperparams(state, learning_rate=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`b1` must be in \[0, 1\) .*; got nan"):
        gbopt.set_hyperparams(state, b1=float("nan"))
    with pytest.raises(TypeError, match=r"`b1` must be a real number .* str"):
        gbopt.set_hyperparams(state, b1="0.9")
    with pytest.raises(ValueError, match=r"holds no injected hyperparameters"):
        gbopt.set_hyperparams(gbopt.adam(1e-3).init(params), learning_rate=1e-4)
    two = gbopt.chain(
        gbopt.inject_hyperparams(gbopt.sgd)(0.1), gbopt.inject_hyperparams(gbopt.sgd)(0.1)
    ).init(params)
    with pytest.raises(
        ValueError, match=r"holds 2 sets of injected hyperparameters \(at state\[0\], state\[1\]\)"
    ):
        gbopt.set_hyperparams(two, learning_rate=1e-4)


def test_update_with_a_foreign_state_names_the_expected_hyperparameters():
    params = _params()
    tx = gbopt.inject_hyperparams(gbopt.adam)(1e-3)
    other = gbopt.inject_hyperparams(gbopt.sgd)(1e-3).init(params)
    with pytest.raises(
        ValueError,
        match=r"hyperparameters \['b1', 'b2', 'eps', 'learning_rate'\]; got \['learning_rate'\]",
    ):
        tx.update(params, other, params)


@pytest.mark.parametrize(
    ("factory", "name", "bad"),
    [
        (gbopt.adam, "learning_rate", -1.0),
        (gbopt.adam, "b1", 1.0),
        (gbopt.adam, "b2", 1.5),
        (gbopt.adam, "eps", -1.0),
        (gbopt.rmsprop, "decay", 1.0),
        (gbopt.momentum, "momentum", -0.5),
        (gbopt.adagrad, "eps", float("inf")),
    ],
)
def test_set_hyperparams_checks_as_the_constructor_does(factory, name, bad):
    """The message is the constructor's own, word for word; the state is left as it was."""
    params = _params()
    state = gbopt.inject_hyperparams(factory)(0.1).init(params)
    with pytest.raises(ValueError) as at_build:
        gbopt.inject_hyperparams(factory)(**{"learning_rate": 0.1, name: bad})
    with pytest.raises(ValueError) as at_set:
        gbopt.set_hyperparams(state, **{name: bad})
    assert str(at_set.value) == str(at_build.value)
    assert f"`{name}`" in str(at_set.value)


def test_set_hyperparams_checks_the_stored_value_and_leaves_traced_values_alone():
    params = _params()
    tx = gbopt.inject_hyperparams(gbopt.adam)(0.1)
    state = tx.init(params)
    # 1 - 1e-9 is < 1 as a float64 but 1.0 once stored in float32: refused.
    with pytest.raises(ValueError, match=r"`b2` must be in \[0, 1\)"):
        gbopt.set_hyperparams(state, b2=1 - 1e-9)

    # Traced values cannot be inspected: stored as they are (documented), and the step
    # then computes what the rule gives (here an ascent step, not an error).
    @jax.jit
    def set_and_step(lr):
        s = gbopt.set_hyperparams(state, learning_rate=lr)
        return tx.update(_grads(params, 0), s, params)[0]

    down, up = set_and_step(0.1), set_and_step(-0.1)
    for k in down:
        np.testing.assert_allclose(np.asarray(up[k]), -np.asarray(down[k]), rtol=1e-6)


def test_optax_inject_hyperparams_wraps_gbopt_factories_with_traced_momentum():
    """optax traces every numeric argument: no check may turn one into a Python bool."""
    params = _params()
    grads = _grads(params, 0)
    cases = [
        (gbopt.rmsprop_nesterov, {"learning_rate": 0.1, "momentum": 0.8}),
        (gbopt.rmsprop, {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True}),
        (gbopt.nesterov, {"learning_rate": 0.1, "momentum": 0.8}),
        (gbopt.momentum, {"learning_rate": 0.1, "momentum": 0.8}),
    ]
    if "momentum" in inspect.signature(gbopt.sgd).parameters:
        cases.append((gbopt.sgd, {"learning_rate": 0.1, "momentum": 0.8}))
        cases.append((gbopt.sgd, {"learning_rate": 0.1, "momentum": 0.8, "nesterov": True}))
    for factory, kwargs in cases:
        tx = optax.inject_hyperparams(factory)(**kwargs)
        plain = factory(**kwargs)
        state = jax.jit(tx.init)(params)
        plain_state = plain.init(params)
        for k in range(3):
            grads = _grads(params, k)
            updates, state = jax.jit(tx.update)(grads, state, params)
            expected, plain_state = plain.update(grads, plain_state, params)
            for key in updates:
                np.testing.assert_allclose(
                    np.asarray(updates[key]), np.asarray(expected[key]), rtol=1e-6, atol=1e-7
                )


def test_optax_inject_hyperparams_bfloat16_b2_error_points_to_gbopt_inject_hyperparams():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    with pytest.raises(
        ValueError,
        match=r"`b2` must be in \[0, 1\) .*got 1\.0\. `b2` arrived as a bfloat16 array, which "
        r"rounds it .*0\.999 becomes 1\.0.*Use gbopt\.inject_hyperparams",
    ):
        optax.inject_hyperparams(gbopt.adam)(learning_rate=0.1).init(params)
    # What the message recommends works: b2 stays 0.999 in float32.
    state = gbopt.inject_hyperparams(gbopt.adam)(learning_rate=0.1).init(params)
    assert state.hyperparams["b2"].dtype == jnp.float32
