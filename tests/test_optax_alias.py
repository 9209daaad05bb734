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
import re
import unittest

import pytest

alias_test = pytest.importorskip("optax._src.alias_test")  # needs scipy and scikit-learn

from optax._src import alias  # noqa: E402

import gbopt  # noqa: E402

pytestmark = pytest.mark.slow  # AliasTest runs 10,000 jitted steps per optimisation case


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


# Cases of optax's tests that encode a behaviour gbopt refuses on purpose, with the reason;
# ``test_explicit_dtype_divergences`` below checks gbopt's behaviour in each of them.
def _divergence(method_name: str, params_repr: str) -> str | None:
    if not method_name.startswith("test_explicit_dtype"):
        return None
    found = dict(re.findall(r"(\w+)=('?[\w]+'?)", params_repr))
    params_dtype = found.get("params_dtype", "None").strip("'")
    state_dtype = found.get("state_dtype", "None").strip("'")
    if params_dtype == "bfloat16" and state_dtype == "None":
        return (
            "gbopt's dtype policy: statistics of bfloat16 parameters are stored in float32 "
            "unless a storage dtype is given (optax: bfloat16)"
        )
    if params_dtype == "complex64" and state_dtype in ("bfloat16", "float32"):
        return (
            "optax stores a complex momentum in a real dtype, dropping its imaginary part; "
            "gbopt keeps it complex in that precision"
        )
    if params_dtype != "complex64" and state_dtype == "complex64":
        return (
            "a real parameter's statistic is real: gbopt stores it in float32 for "
            "complex64 (optax: complex64 with a zero imaginary part)"
        )
    return None


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
        divergence = _divergence(methodName, getattr(method, "__x_params_repr__", ""))

        @functools.wraps(method)
        def with_gbopt():
            if internal:
                raise unittest.SkipTest(
                    "tests optax's own L-BFGS internals; no optimizer of gbopt's to run"
                )
            if divergence:
                raise unittest.SkipTest(divergence)
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


def test_explicit_dtype_divergences():
    """What gbopt does where optax's test_explicit_dtype expects otherwise (skipped above)."""
    import jax.numpy as jnp

    def stored(tx, params_dtype, field):
        state = tx.init(jnp.zeros(2, params_dtype))
        return gbopt.state_get(state, field).dtype

    for make, field in [
        (lambda dtype: gbopt.sgd(0.1, momentum=0.9, accumulator_dtype=dtype), "trace"),
        (lambda dtype: gbopt.adam(0.1, mu_dtype=dtype), "mu"),
    ]:
        assert stored(make(None), jnp.bfloat16, field) == jnp.float32
        assert stored(make(jnp.bfloat16), jnp.bfloat16, field) == jnp.bfloat16
        for real in ("bfloat16", "float32"):
            assert stored(make(real), jnp.complex64, field) == jnp.complex64
        for params_dtype in (jnp.bfloat16, jnp.float32):
            assert stored(make("complex64"), params_dtype, field) == jnp.float32
    assert _divergence("test_explicit_dtype3", "(params_dtype='bfloat16', state_dtype=None, x=1)")
    assert not _divergence("test_explicit_dtype3", "(params_dtype='float32', state_dtype=None)")
