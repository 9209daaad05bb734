"""The contract: a gradient transformation is a pure ``(init, update)`` pair.

``init(params) -> state`` builds the state for a pytree of parameters.
``update(updates, state, params=None, **extra_args) -> (updates, state)`` maps a
pytree of gradients (the *updates stream*) to a pytree of updates and a new state.
Both are pure functions of arrays, so they compose with ``jax.jit``, ``jax.vmap``,
``jax.grad``, ``jax.lax.scan`` and sharding.

:class:`GradientTransformation` subclasses optax's
``GradientTransformationExtraArgs`` (adding no fields), so optax, Flax's
``TrainState`` and ``nnx.Optimizer`` accept a gbopt transform wherever they accept
an optax one, and never wrap it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import optax

PyTree = Any
Params = Any
Updates = Any
OptState = Any
ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]


class InitFn(Protocol):
    """Builds the state of a transform from the parameters."""

    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    """Maps updates and state to new updates and state."""

    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(optax.GradientTransformationExtraArgs):
    """A pure ``(init, update)`` pair; the type every gbopt factory returns.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra_args) -> (updates, state)``.
        Extra keyword arguments (optax passes ``value=``, ``grad=``, ``value_fn=``) are
        accepted by every gbopt transform and handed on by every combinator.
    """

    __slots__ = ()


EMPTY_STATE: tuple[()] = ()
"""The state of a transform that keeps none: the empty tuple ``()``.

Not a NamedTuple such as ``optax.EmptyState``: JAX flattens and rebuilds a plain tuple
in C++ but rebuilds a NamedTuple by calling Python, which cost about 0.3 µs per stateless
member on every jitted call (``benchmarks/RESULTS.md``, 10 tiny leaves). Code that tests
for "no state" should test ``state == ()``, which ``optax.EmptyState()`` also passes.
"""


def as_transform(tx: Any, *, argument: str = "transform") -> GradientTransformation:
    """Returns ``tx`` as a gbopt transform; optax transforms are accepted as they are.

    Raises:
      TypeError: if ``tx`` is not an ``(init, update)`` pair, naming ``argument``.
    """
    if isinstance(tx, GradientTransformation):
        return tx
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        return GradientTransformation(tx.init, tx.update)
    if isinstance(tx, optax.GradientTransformation):
        tx = optax.with_extra_args_support(tx)
        return GradientTransformation(tx.init, tx.update)
    raise TypeError(
        f"`{argument}` must be a gradient transformation (an (init, update) pair such as "
        f"gbopt.adam(1e-3) or optax.adam(1e-3)); got {type(tx).__name__}: {tx!r}. "
        "If you passed a factory such as gbopt.adam, call it: gbopt.adam(learning_rate)."
    )


def expect_state(state: Any, cls: type, who: str) -> None:
    """Raises a ValueError unless ``state`` is a ``cls``, the state ``who`` builds.

    A check in Python at trace time: free at run time under ``jax.jit``.
    """
    if not isinstance(state, cls):
        raise ValueError(
            f"{who} got a state of type {type(state).__name__}, not the {cls.__name__} its "
            "`init` builds. Pass the state that this transform's `init` returned (or the "
            "one its last `update` returned)."
        )


def expect_keyed_state(
    state: Any, cls: type, field: str, keys: Any, who: str, noun: str, fix: str
) -> None:
    """Raises a ValueError unless ``state`` is a ``cls`` whose dict ``field`` has ``keys``.

    For states keyed by name (hyperparameters, labels): a state built for other names
    would be read wrongly. ``noun`` names the keys in the message, ``fix`` ends it.
    """
    if isinstance(state, cls) and set(getattr(state, field)) == set(keys):
        return
    got = sorted(getattr(state, field)) if isinstance(state, cls) else type(state).__name__
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    raise ValueError(
        f"{who} expects {article} {cls.__name__} with {noun} {sorted(keys)}; got {got}. {fix}"
    )


def identity() -> GradientTransformation:
    """Passes the updates through unchanged; keeps no state.

    Useful as a branch of :func:`gbopt.divide` (RMSProp and AdaGrad divide the gradient
    itself by a root of its accumulated square).
    """

    def init_fn(params):
        del params
        return EMPTY_STATE

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return GradientTransformation(init_fn, update_fn)
