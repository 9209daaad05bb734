"""optax's own alias tests, run with gbopt's optimizers in place of optax's.

The installed optax wheel ships its test module ``optax/_src/alias_test.py``. Its
``AliasTest`` (optimisation of a parabola and Rosenbrock in float32 and complex64, no
recompilation, extra arguments, ``inject_hyperparams`` wrapping, explicit state dtypes,
dtype preservation, state stability under ``lax.cond``, gradient accumulation) and its
``LBFGSTest`` look each optimizer up as an attribute of ``optax._src.alias`` when a test
runs (``getattr(alias, opt_name)``, ``alias.sgd(...)``, ``alias.lbfgs(...)``). The
classes below are subclasses that, for the duration of each test, set every optimizer
name of ``optax._src.alias`` to gbopt's function of the same name, and fail a test that
passes without calling one (so a replacement that did not take effect cannot pass).
Names gbopt does not have are skipped ("gbopt has no <name> yet") the moment a test asks
for one; they join as soon as ``gbopt`` exports them. No optax test code is copied.
"""

from __future__ import annotations

import functools
import inspect
import unittest

import pytest

alias_test = pytest.importorskip("optax._src.alias_test")  # needs scipy and scikit-learn

from optax._src import alias  # noqa: E402

import gbopt  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # AliasTest runs 10,000 jitted steps per optimisation case
    # Warnings raised by optax's own test code and line search, not by gbopt (the suite
    # turns every warning into an error): LBFGSTest feeds NumPy float64 starting points
    # to optax's zoom line search without x64, and calls scikit-learn with `penalty=`.
    pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning"),
    pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning"),
]


def _optimizer_names() -> list[str]:
    """Every optimizer factory of ``optax._src.alias`` (functions and partials)."""
    names = []
    for name, obj in vars(alias).items():
        if name.startswith("_"):
            continue
        defined_here = inspect.isfunction(obj) and obj.__module__ == alias.__name__
        if defined_here or isinstance(obj, functools.partial):
            names.append(name)
    return sorted(names)


OPTIMIZER_NAMES = _optimizer_names()


def gbopt_names() -> list[str]:
    """The optimizer names of optax's alias module that gbopt has."""
    return [name for name in OPTIMIZER_NAMES if callable(getattr(gbopt, name, None))]


class _WithGboptOptimizers:
    """Mixin: runs the test method with ``optax._src.alias.<name>`` set to ``gbopt.<name>``."""

    # Tests that call no optimizer of the alias module (optax's own internals).
    optax_internal_tests: tuple[str, ...] = ()

    def __init__(self, methodName: str = "runTest"):
        super().__init__(methodName)
        if not methodName.startswith("test"):
            return
        method = getattr(self, methodName)
        internal = methodName.startswith(self.optax_internal_tests)

        @functools.wraps(method)
        def with_gbopt():
            if internal:
                raise unittest.SkipTest(
                    "tests optax's own L-BFGS internals; no optimizer of gbopt's to run"
                )
            calls: list[str] = []
            saved = {name: getattr(alias, name) for name in OPTIMIZER_NAMES}
            for name in OPTIMIZER_NAMES:
                setattr(alias, name, _replacement(name, calls))
            try:
                method()
            finally:
                for name, obj in saved.items():
                    setattr(alias, name, obj)
            if not calls:
                raise AssertionError(
                    f"{methodName} called none of gbopt's optimizers: the replacement of "
                    "optax._src.alias's names did not take effect."
                )

        setattr(self, methodName, with_gbopt)


def _replacement(name: str, calls: list[str]):
    ours = getattr(gbopt, name, None)
    if not callable(ours):

        def missing(*args, **kwargs):
            raise unittest.SkipTest(f"gbopt has no {name} yet")

        return missing

    @functools.wraps(ours)
    def recorded(*args, **kwargs):
        calls.append(name)
        return ours(*args, **kwargs)

    return recorded


class TestGboptAlias(_WithGboptOptimizers, alias_test.AliasTest):
    """optax's ``AliasTest`` with gbopt's optimizers."""


class TestGboptLBFGS(_WithGboptOptimizers, alias_test.LBFGSTest):
    """optax's ``LBFGSTest`` with ``gbopt.lbfgs``."""

    optax_internal_tests = ("test_plain_preconditioning", "test_preconditioning_by_lbfgs_")


def test_replacement_takes_effect():
    """Inside a test, ``optax._src.alias.sgd`` is gbopt's; outside, optax's again."""
    seen = {}

    class Probe(_WithGboptOptimizers, unittest.TestCase):
        def test_probe(self):
            seen["sgd"] = alias.sgd
            alias.sgd(0.1)

    original = alias.sgd
    result = unittest.TestResult()
    Probe("test_probe").run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    assert seen["sgd"] is not original and seen["sgd"].__wrapped__ is gbopt.sgd
    assert alias.sgd is original
    assert "sgd" in gbopt_names() and "adam" in gbopt_names()


def test_explicit_dtype_policy():
    """What optax's test_explicit_dtype checks, and what it does not: the values.

    First moments (``trace``, ``mu``) follow the parameters' dtype by default, bfloat16
    and float16 included, while Adam's ``nu`` stays float32; a real storage dtype for a
    complex parameter keeps both parts (pairs on a last axis of 2), a complex one for a
    real parameter keeps a zero imaginary part.
    """
    import jax.numpy as jnp
    import numpy as np

    def state_of(tx, params_dtype):
        params = jnp.asarray([0.5, -1.0], params_dtype)
        state = tx.init(params)
        grad = jnp.asarray([0.25, 2.0], params_dtype)
        if params_dtype == jnp.complex64:
            grad = grad * jnp.complex64(1 - 0.5j)
        for _ in range(3):
            updates, state = tx.update(grad, state, params)
            assert updates.dtype == params.dtype
        return state

    for make, field in [
        (lambda dtype: gbopt.sgd(0.1, momentum=0.9, accumulator_dtype=dtype), "trace"),
        (lambda dtype: gbopt.adam(0.1, mu_dtype=dtype), "mu"),
        (lambda dtype: gbopt.adamw(0.1, mu_dtype=dtype), "mu"),
    ]:
        for low in (jnp.bfloat16, jnp.float16):
            state = state_of(make(None), low)
            assert gbopt.state_get(state, field).dtype == low
            if field == "mu":
                assert gbopt.state_get(state, "nu").dtype == jnp.float32
        for real in (jnp.bfloat16, jnp.float32):
            stored = gbopt.state_get(state_of(make(real), jnp.complex64), field)
            assert (stored.dtype, stored.shape) == (real, (2, 2))
            assert np.all(np.asarray(stored[:, 1], np.float32) != 0)  # the imaginary part
        full = gbopt.state_get(state_of(make(None), jnp.complex64), field)
        pairs = gbopt.state_get(state_of(make(jnp.float32), jnp.complex64), field)
        np.testing.assert_array_equal(np.asarray(pairs[:, 0]), np.asarray(full.real))
        np.testing.assert_array_equal(np.asarray(pairs[:, 1]), np.asarray(full.imag))
        for params_dtype in (jnp.bfloat16, jnp.float32):
            stored = gbopt.state_get(state_of(make(jnp.complex64), params_dtype), field)
            assert stored.dtype == jnp.complex64 and np.all(np.asarray(stored.imag) == 0)
            assert np.all(np.asarray(stored.real) != 0)
        # complex64 storage holds a float32 statistic exactly: the same values as float32
        stored = gbopt.state_get(state_of(make(jnp.complex64), jnp.float32), field)
        want = gbopt.state_get(state_of(make(None), jnp.float32), field)
        np.testing.assert_array_equal(np.asarray(stored.real), np.asarray(want))
