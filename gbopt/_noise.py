r"""Gradient noise with a PRNG key in the state: :func:`add_noise` and noisy SGD.

The key lives in the state, so an update is a pure function (the same state gives the
same noise) and a checkpoint resumes the same noise sequence.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _numerics, _placement, _validate
from gbopt._base import (
    GradientTransformation,
    ScalarOrSchedule,
    expect_state,
    named,
    with_info,
)
from gbopt._combine import chain
from gbopt._maps import scale_by_learning_rate


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`.

    Attributes:
      count: updates applied so far (int32, saturating).
      rng_key: the key the next update splits (a typed ``jax.random.key``).
    """

    count: jax.Array
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    """A typed PRNG key from a key (typed or raw uint32) or an int seed."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return jax.random.key(key)
    if hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jnp.integer) and jnp.ndim(key) == 0:
        return jax.random.key(key)  # an int seed as an array (optax.inject_hyperparams makes one)
    raise TypeError(
        "`key` must be a JAX PRNG key (jax.random.key(0)) or an int seed; got "
        f"{type(key).__name__}: {key!r}."
    )


def add_noise(
    eta: float | jax.Array, gamma: float | jax.Array, key: Any = None, *, seed: int | None = None
) -> GradientTransformation:
    r"""Adds annealed Gaussian noise to the updates.

    .. math::
        u_t \leftarrow u_t + \sigma_t\, \xi_t, \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \qquad \xi_t \sim \mathcal N(0, I)

    (:math:`t` the 1-based step). Each update splits the key kept in the state into the
    next key and a sampling key, and the sampling key into one key per leaf (in the
    order of ``jax.tree.leaves``): the same key gives optax's ``add_noise`` noise, draw
    for draw, for float32 and float64 updates (lower-precision updates are sampled in
    float32 here, in their own dtype in optax).

    Args:
      eta: :math:`\eta` >= 0, the initial variance.
      gamma: :math:`\gamma` >= 0, the annealing exponent (0.55 in the paper).
      key: a ``jax.random.key``, or an int seed (a Python int or a scalar integer array).
        None uses seed 0, with a warning, as optax does.
      seed: deprecated (optax's old name for ``key``); give one of the two.

    Returns:
      A transform with state :class:`AddNoiseState`.

    Raises:
      ValueError: for a negative ``eta`` or ``gamma``, or both ``key`` and ``seed``.
      TypeError: for a ``key`` that is neither a PRNG key nor an int.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
      Networks", 2015.
    """
    _validate.non_negative("eta", eta)
    _validate.non_negative("gamma", gamma)
    if seed is not None:
        warnings.warn(
            "`seed` is deprecated (as in optax); pass `key=` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        if key is not None:
            raise ValueError("Give one of `key` and `seed`, not both (`seed` is deprecated).")
        key = seed
    if key is None:
        warnings.warn(
            "No `key` given: the noise uses key 0 (as optax does). Pass `key=` (an int or "
            "jax.random.key) to choose the noise sequence.",
            stacklevel=2,
        )
        key = 0
    key = _as_key(key)

    def init_fn(params):
        return AddNoiseState(_placement.zero_count(params), key)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        expect_state(state, AddNoiseState, "add_noise")
        count = _numerics.safe_increment(state.count)
        next_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        std = _dtypes.per_dtype(
            lambda dtype: jnp.sqrt(
                jnp.asarray(eta, dtype) / count.astype(dtype) ** jnp.asarray(gamma, dtype)
            )
        )

        def leaf(u, k):
            u = _dtypes.as_array(u)
            wide = _dtypes.state_dtype(u.dtype)
            noise = jax.random.normal(k, u.shape, wide)
            return _dtypes.cast(_dtypes.cast(u, wide) + std(wide) * noise, u.dtype)

        out = treedef.unflatten([leaf(u, k) for u, k in zip(leaves, keys, strict=True)])
        return out, AddNoiseState(count, next_key)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "add_noise",
        "statistic",
        hyperparams={"eta": eta, "gamma": gamma},
        # The key is the statistic; the count is the step t.
        math=r"k \leftarrow \operatorname{split}(k);\quad "
        r"\xi = \text{a draw of } \mathcal N(0, I) \text{ with } k;\quad "
        r"u \leftarrow u + \sqrt{\eta / t^{\gamma}}\, \xi",
        state=("rng_key",),
    )


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float | jax.Array = 0.01,
    gamma: float | jax.Array = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""SGD on gradients with annealed Gaussian noise added.

    .. math::
        k \leftarrow \operatorname{split}(k), \qquad
        \xi_t \sim \mathcal N(0, I) \text{ drawn with } k, \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \\
        w \leftarrow w - \alpha_t \left(g_t + \sigma_t \xi_t\right)

    The state keeps the PRNG key :math:`k` and the step :math:`t` (:func:`add_noise`),
    so the same state gives the same noise.

    Drop-in for ``optax.noisy_sgd`` (same signature and defaults; the same key gives
    the same noise for float32 and float64 parameters).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule.
      eta: :math:`\eta` >= 0, the initial variance of the noise.
      gamma: :math:`\gamma` >= 0, its annealing exponent.
      key: a ``jax.random.key`` or an int seed (None: seed 0, with a warning).
      seed: deprecated name of ``key``.

    Returns:
      ``chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))``.

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
      Networks", 2015.
    """
    return named(
        "noisy_sgd",
        chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate)),
        learning_rate=learning_rate,
        eta=eta,
        gamma=gamma,
    )
