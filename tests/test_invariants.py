"""Table-driven invariants that every optimizer of the seed must keep."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import OPTIMIZERS, nested_tree

import gbopt

NAMES = list(OPTIMIZERS)


def _params(dtype=jnp.float32):
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), nested_tree(np.random.default_rng(1)))


def _grads(params, seed=2):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def _loss(params):
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32) - 0.5)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    tx = OPTIMIZERS[name]()
    params = _params()
    state = tx.init(params)
    for seed in range(3):
        grads = _grads(params, seed)
        eager_u, eager_s = tx.update(grads, state, params)
        jit_u, jit_s = jax.jit(tx.update)(grads, state, params)
        chex.assert_trees_all_close(eager_u, jit_u, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(eager_s, jit_s, rtol=1e-6, atol=1e-7)
        state = jit_s
        params = gbopt.apply_updates(params, jit_u)


@pytest.mark.parametrize("name", NAMES)
def test_no_retrace_on_later_calls(name):
    tx = OPTIMIZERS[name]()
    params = _params()
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        return gbopt.apply_updates(params, updates), state

    chex.clear_trace_counter()
    for _ in range(3):
        params, state = step(params, state)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", NAMES)
def test_params_and_updates_keep_their_dtype(name, dtype):
    tx = OPTIMIZERS[name]()
    params = _params(dtype)
    state = tx.init(params)
    step = jax.jit(tx.update)
    for seed in range(3):
        updates, state = step(_grads(params, seed), state, params)
        jax.tree.map(lambda u: chex.assert_type(u, dtype), updates)
        params = gbopt.apply_updates(params, updates)
        jax.tree.map(lambda p: chex.assert_type(p, dtype), params)
        chex.assert_tree_all_finite(params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_state_structure_shapes_and_dtypes_are_stable(name, dtype):
    tx = OPTIMIZERS[name]()
    params = _params(dtype)
    state0 = tx.init(params)
    state = state0
    for seed in range(2):
        _, state = jax.jit(tx.update)(_grads(params, seed), state, params)
    chex.assert_trees_all_equal_structs(state0, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(state0, state)


@pytest.mark.parametrize("name", NAMES)
def test_state_is_a_pytree_of_arrays(name):
    state = OPTIMIZERS[name]().init(_params())
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array), type(leaf)


@pytest.mark.parametrize("name", NAMES)
def test_runs_inside_scan_and_equals_the_python_loop(name):
    tx = OPTIMIZERS[name]()
    params = _params()

    def step(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(_loss)(params), state, params)
        return (gbopt.apply_updates(params, updates), state), _loss(params)

    (scanned, _), losses = jax.jit(lambda c: jax.lax.scan(step, c, length=20))(
        (params, tx.init(params))
    )
    carry = (params, tx.init(params))
    jit_step = jax.jit(step)
    for _ in range(20):
        carry, _ = jit_step(carry, None)
    chex.assert_trees_all_close(scanned, carry[0], rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_runs_inside_cond(name):
    """Both branches of ``lax.cond`` must agree on the state's types: skip or step."""
    tx = OPTIMIZERS[name]()
    params = _params()
    state = tx.init(params)
    grads = _grads(params)

    @jax.jit
    def maybe_step(do, params, state):
        def step(operands):
            params, state = operands
            updates, state = tx.update(grads, state, params)
            return gbopt.apply_updates(params, updates), state

        return jax.lax.cond(do, step, lambda ops: ops, (params, state))

    skipped = maybe_step(False, params, state)
    chex.assert_trees_all_equal(skipped, (params, state))
    stepped = maybe_step(True, params, state)
    updates, new_state = tx.update(grads, state, params)
    chex.assert_trees_all_close(stepped, (gbopt.apply_updates(params, updates), new_state))


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_a_quadratic(name):
    tx = OPTIMIZERS[name]()
    params = _params()
    state = tx.init(params)

    @jax.jit
    def run(params, state):
        def step(carry, _):
            params, state = carry
            updates, state = tx.update(jax.grad(_loss)(params), state, params)
            return (gbopt.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), length=300)[0]

    final, _ = run(params, state)
    assert _loss(final) < 0.5 * _loss(params)


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_accepts_float_array_and_schedule(name):
    """The same constant learning rate given three ways gives the same updates."""
    factory = getattr(gbopt, name)
    params = _params()
    grads = _grads(params)
    results = []
    for lr in (1e-2, jnp.asarray(1e-2), lambda count: 1e-2 * jnp.ones([], jnp.float32)):
        tx = factory(lr)
        u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
        results.append(u)
    chex.assert_trees_all_close(results[0], results[1])
    chex.assert_trees_all_close(results[0], results[2])


@pytest.mark.parametrize("name", NAMES)
def test_runs_under_strict_dtype_promotion(name):
    """No implicit promotions inside gbopt: it runs with jax_numpy_dtype_promotion='strict'."""
    tx = OPTIMIZERS[name]()
    for dtype in (jnp.float32, jnp.bfloat16):
        params = _params(dtype)
        with jax.numpy_dtype_promotion("strict"):
            state = tx.init(params)
            updates, state = tx.update(_grads(params), state, params)
            gbopt.apply_updates(params, updates)


# The catalog (optax's names, and the matrix-aware optimizers) with optax's defaults, and a
# global clip, for the strict-promotion invariant below. L-BFGS without its line search:
# optax's zoom line search, which gbopt.lbfgs calls as optax.lbfgs does, itself refuses
# strict promotion for bfloat16 and complex parameters
# (test_lbfgs_line_search_is_optax_under_strict_promotion).
CATALOG = {
    **{
        name: (lambda n=name: getattr(gbopt, n)(1e-2))
        for name in (
            "adamw nadam nadamw adamax adamaxw amsgrad radam adabelief yogi adan lion lamb lars "
            "adafactor adadelta novograd sm3 sign_sgd signum fromage polyak_sgd "
            "optimistic_gradient_descent optimistic_adam optimistic_adam_v2 muon shampoo soap"
        ).split()
    },
    "noisy_sgd": lambda: gbopt.noisy_sgd(1e-2, key=0),
    "lbfgs": lambda: gbopt.lbfgs(1e-2, linesearch=None),
    # a global norm over float32, bfloat16 and complex leaves
    "clip_by_global_norm+adam": lambda: gbopt.chain(
        gbopt.clip_by_global_norm(1.0), gbopt.adam(1e-2)
    ),
}


def _catalog_params():
    """One tree with a leaf of each dtype: float32, bfloat16 and complex64."""
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "w": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(6,)), jnp.bfloat16),
        },
        "phase": jnp.asarray(rng.normal(size=(4, 3)) + 1j * rng.normal(size=(4, 3)), jnp.complex64),
    }


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_catalog_runs_under_strict_dtype_promotion(name):
    """Every catalog name runs with jax_numpy_dtype_promotion='strict', on a tree of
    float32, bfloat16 and complex64 leaves.

    Real scalars (bias factors, trust ratios, Polyak's step, L-BFGS's coefficients, matrix
    roots' eigenvalues) meet complex updates, and a float32 objective meets bfloat16
    parameters: gbopt casts them itself, as standard promotion would, so the results are
    those of the standard mode (checked to the bit).
    """
    tx = CATALOG[name]()
    params = _catalog_params()
    grads = jax.tree.map(lambda p: p * jnp.asarray(0.5, p.dtype), params)
    extra = {"value": jnp.asarray(2.0, jnp.float32)} if name == "polyak_sgd" else {}

    def step():
        state = tx.init(params)
        for _ in range(2):
            updates, state = tx.update(grads, state, params, **extra)
        return gbopt.apply_updates(params, updates), state

    with jax.numpy_dtype_promotion("standard"):
        expected = step()
    with jax.numpy_dtype_promotion("strict"):
        got = step()
    chex.assert_trees_all_equal(got, expected)
    chex.assert_trees_all_equal_dtypes(got[0], params)


def test_rprop_refuses_complex_parameters_by_path():
    params = {"dense": {"w": jnp.ones(3, jnp.complex64)}, "b": jnp.ones(2)}
    tx = gbopt.rprop(1e-2)
    with pytest.raises(
        TypeError, match=r"rprop_step_sizes does not take complex.*\['dense'\]\['w'\]"
    ):
        tx.init(params)
    state = tx.init(jax.tree.map(lambda x: jnp.real(x), params))
    with pytest.raises(TypeError, match=r"updates\['dense'\]\['w'\] is complex64"):
        tx.update(params, state)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.complex64])
def test_lbfgs_line_search_is_optax_under_strict_promotion(dtype):
    """gbopt.lbfgs with its line search fails under strict promotion exactly where
    optax.lbfgs does (inside optax's zoom line search); if optax fixes it, so does gbopt."""
    import optax

    params = _catalog_params()
    params = {"x": next(x for x in jax.tree.leaves(params) if x.dtype == dtype)}

    def value_fn(p):
        return sum(jnp.sum(jnp.abs(x).astype(jnp.float32) ** 2) for x in jax.tree.leaves(p))

    outcomes = []
    for tx in (gbopt.lbfgs(1e-2), optax.lbfgs(1e-2)):
        try:
            with jax.numpy_dtype_promotion("strict"):
                tx.update(
                    params,
                    tx.init(params),
                    params,
                    value=value_fn(params),
                    grad=params,
                    value_fn=value_fn,
                )
            outcomes.append("ran")
        except Exception as e:  # the promotion error's class is private to JAX
            outcomes.append(type(e).__name__)
    assert outcomes[0] == outcomes[1], outcomes
