r"""Compensated updates for low-precision parameters, without a float32 master copy.

A bfloat16 parameter near 1 moves only in steps of :math:`2^{-8}`: adding an update
smaller than half of that rounds back to the same number, and a long run of small
updates (a small learning rate, late in training) is lost entirely. The usual cure
keeps a float32 *master copy* of the parameters (4 more bytes per parameter). The two
transforms here cure it with less:

* :func:`kahan_summation` keeps the rounding error of each step in a compensation
  buffer of the parameters' own dtype (2 bytes per bfloat16 parameter) and adds it to the
  next update (Kahan, 1965; as torch-optimi's ``kahan_sum=True`` does);
* :func:`stochastic_rounding` keeps only a PRNG key: it rounds :math:`w + u` up or
  down at random with the probabilities that make the rounding exact on average.

Both go **last** in a chain (after the learning rate), need ``params`` in ``update``,
and return the difference between the new parameter and the old one, computed in at
least float32, so that :func:`gbopt.apply_updates` (or ``optax.apply_updates``) lands
exactly on the compensated value::

    tx = gbopt.chain(gbopt.adam(1e-3), gbopt.kahan_summation())
    updates, state = tx.update(grads, state, params)
    params = gbopt.apply_updates(params, updates)       # bfloat16 params stay bfloat16

For float32 (and wider) parameters both are harmless: Kahan summation then keeps a
float32 compensation (classic compensated summation), stochastic rounding has no wider
sum to round and passes the updates through.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _placement, _tree, _tree_checks
from gbopt._base import GradientTransformation, expect_state, with_info


def _same_dtype(dtype):
    return jnp.dtype(dtype)


def _need_params(params: Any, who: str) -> None:
    if params is None:
        raise ValueError(
            f"{who} needs the parameters: call `update(updates, state, params)`. It returns "
            "`new_params - params` for the compensated `new_params`, which it computes from "
            "the parameters themselves."
        )


class KahanSummationState(NamedTuple):
    """State of :func:`kahan_summation`.

    Attributes:
      compensation: the rounding error not yet applied, :math:`c`, one array per parameter
        in the parameter's dtype.
    """

    compensation: Any


def kahan_summation() -> GradientTransformation:
    r"""Kahan-compensated parameter updates: the rounding error of each step is carried over.

    With the parameter :math:`w` and compensation :math:`c` in the parameter's dtype
    (rounding :math:`\mathrm{rd}`) and the incoming update :math:`u`:

    .. math::
        y = \mathrm{rd}(c + u), \qquad w' = \mathrm{rd}(w + y), \qquad
        c' = \mathrm{rd}\bigl(y + \mathrm{rd}(w - w')\bigr), \qquad
        \text{output} = w' - w

    each operation computed in float32 (at least) and rounded once, as PyTorch computes
    bfloat16 arithmetic: the rule of torch-optimi's ``kahan_sum=True``, to the bit.
    :math:`w + c` then tracks the exact sum of the updates to the precision of
    :math:`c`, which is far below an ulp of :math:`w`.

    The output is in float32 for float16/bfloat16 parameters (the parameter's dtype when
    wider), so that ``apply_updates(params, output)`` lands exactly on :math:`w'`. Place
    it last in a chain, after the learning rate.

    Returns:
      A transform with state :class:`KahanSummationState` (2 bytes per bfloat16
      parameter, against 4 for a float32 master copy).

    Raises:
      ValueError: at ``update``, when ``params`` is not given.

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.chain(gbopt.sgd(1e-3), gbopt.kahan_summation())
      >>> params = {"w": jnp.ones(3, jnp.bfloat16)}
      >>> state = tx.init(params)
      >>> for _ in range(100):
      ...     u, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
      ...     params = gbopt.apply_updates(params, u)
      >>> params["w"]  # the nearest bfloat16 to 0.9; plain bfloat16 stays at 1.0
      Array([0.898438, 0.898438, 0.898438], dtype=bfloat16)
      >>> params["w"][0].astype(float) + state[1].compensation["w"][0].astype(float)
      Array(0.90005493, dtype=float32)

    References:
      Kahan, "Further remarks on reducing truncation errors", CACM 1965; Zamirai et al.,
      "Revisiting BFloat16 Training", 2020; torch-optimi (Warner), ``kahan_sum``.
    """

    def init_fn(params):
        return KahanSummationState(_placement.zeros_like(params, _same_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(state, KahanSummationState, "kahan_summation")
        _need_params(params, "kahan_summation")
        _tree_checks.check_matches(updates, params, what="updates", reference_name="params")
        _tree_checks.check_matches(
            state.compensation, params, what="state's `compensation`", reference_name="params"
        )

        def leaf(u, c, w):
            w = _dtypes.as_array(w)
            dtype = w.dtype
            wide = _dtypes.state_dtype(dtype)
            y = _dtypes.cast(_dtypes.cast(c, wide) + _dtypes.cast(u, wide), dtype)
            w_new = _dtypes.cast(_dtypes.cast(w, wide) + _dtypes.cast(y, wide), dtype)
            moved = _dtypes.cast(_dtypes.cast(w, wide) - _dtypes.cast(w_new, wide), dtype)
            c_new = _dtypes.cast(_dtypes.cast(y, wide) + _dtypes.cast(moved, wide), dtype)
            return _dtypes.cast(w_new, wide) - _dtypes.cast(w, wide), c_new

        out, comp = _tree.map_leaves(leaf, 2, updates, state.compensation, params)
        return out, KahanSummationState(comp)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "kahan_summation",
        math=r"y = \mathrm{rd}(c + u);\ u \leftarrow \mathrm{rd}(w + y) - w;\ "
        r"c \leftarrow \mathrm{rd}(y - u)",
        state=("compensation",),
    )


class StochasticRoundingState(NamedTuple):
    """State of :func:`stochastic_rounding`.

    Attributes:
      key: the PRNG key of the next step's rounding.
    """

    key: jax.Array


def round_stochastically(x: jax.Array, dtype: Any, key: jax.Array) -> jax.Array:
    r"""Rounds ``x`` to ``dtype`` up or down at random, exact on average.

    .. math::
        \mathrm{sr}(x) = \begin{cases} \lceil x \rceil & \text{with probability }
        (x - \lfloor x \rfloor) / (\lceil x \rceil - \lfloor x \rfloor) \\
        \lfloor x \rfloor & \text{otherwise} \end{cases}

    where :math:`\lfloor x \rfloor, \lceil x \rceil` are the neighbouring numbers of
    ``dtype`` around :math:`x`; numbers of ``dtype`` (and infinities, NaN) are kept.

    Args:
      x: the values, in a dtype wider than ``dtype``.
      dtype: the narrower floating dtype to round to.
      key: a PRNG key.

    Returns:
      ``x`` rounded to ``dtype``.
    """
    dtype = jnp.dtype(dtype)
    near = x.astype(dtype)
    back = near.astype(x.dtype)
    above = back > x
    low = jnp.where(above, jnp.nextafter(near, jnp.asarray(-jnp.inf, dtype)), near)
    high = jnp.where(above, near, jnp.nextafter(near, jnp.asarray(jnp.inf, dtype)))
    low_w, high_w = low.astype(x.dtype), high.astype(x.dtype)
    p_up = (x - low_w) / (high_w - low_w)
    draw = jax.random.uniform(key, x.shape, x.dtype)
    return jnp.where(back == x, near, jnp.where(draw < p_up, high, low))


def stochastic_rounding(key: jax.Array | int = 0) -> GradientTransformation:
    r"""Stochastically rounded parameter updates: exact on average, no extra buffer.

    .. math::
        w' = \mathrm{sr}(w + u), \qquad \text{output} = w' - w

    with :math:`w + u` computed in float32 and :math:`\mathrm{sr}` of
    :func:`round_stochastically` to the parameter's dtype: an update far below an ulp of
    :math:`w` moves it by one ulp with the matching small probability, so that
    :math:`\mathbb{E}[w'] = w + u`. Each step draws fresh random numbers from the key in
    the state (split once per step; the same key gives the same run). Parameters of
    float32 or wider pass the updates through (the sum has no wider dtype to round from).

    The output is in float32 for float16/bfloat16 parameters, so that
    ``apply_updates(params, output)`` lands exactly on :math:`w'`. Place it last in a
    chain, after the learning rate.

    Args:
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``) or an int seed.

    Returns:
      A transform with state :class:`StochasticRoundingState`.

    Raises:
      ValueError: at ``update``, when ``params`` is not given.
      TypeError: ``key`` neither an int nor a PRNG key.

    References:
      Gupta et al., "Deep Learning with Limited Numerical Precision", ICML 2015; Zamirai
      et al., "Revisiting BFloat16 Training", 2020.
    """
    if isinstance(key, bool) or not isinstance(key, (int, jax.Array)):
        raise TypeError(
            f"`key` must be an int seed or a PRNG key (jax.random.key(0)); got "
            f"{type(key).__name__}: {key!r}."
        )

    def init_fn(params):
        del params
        return StochasticRoundingState(jax.random.key(key) if isinstance(key, int) else key)

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        expect_state(state, StochasticRoundingState, "stochastic_rounding")
        _need_params(params, "stochastic_rounding")
        _tree_checks.check_matches(updates, params, what="updates", reference_name="params")
        key, step_key = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(step_key, max(len(leaves), 1))
        p_leaves = treedef.flatten_up_to(params)

        def leaf(u, w, k):
            w = _dtypes.as_array(w)
            dtype = w.dtype
            wide = _dtypes.state_dtype(dtype)
            if wide == dtype:
                return u
            x = _dtypes.cast(w, wide) + _dtypes.cast(u, wide)
            w_new = round_stochastically(x, dtype, k)
            return _dtypes.cast(w_new, wide) - _dtypes.cast(w, wide)

        triples = zip(leaves, p_leaves, keys[: len(leaves)], strict=True)
        out = [leaf(_dtypes.as_array(u), w, k) for u, w, k in triples]
        return treedef.unflatten(out), StochasticRoundingState(key)

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "stochastic_rounding",
        math=r"u \leftarrow \mathrm{sr}(w + u) - w",
        state=("key",),
    )
