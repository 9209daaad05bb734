r"""Optimizer state stored block-wise quantized: 8 or 4 bits per statistic, one scale per block.

:func:`quantize_state` wraps any transform (gbopt or optax). Its state is the inner
transform's state with each large floating-point leaf replaced by a
:class:`QuantizedArray`: integer codes (``uint8``; two 4-bit codes per byte) and one
absmax scale per block. ``update`` dequantizes those leaves, runs the inner update in
the dtypes the inner transform built, and quantizes the new statistics again. This is
the block-wise dynamic quantization of Dettmers et al. (2022), as in bitsandbytes'
8-bit optimizers, and the 4-bit state of Li et al. (2023), as in torchao's ``AdamW4bit``.

Quantization of one block :math:`x` of :math:`B` numbers with the sorted code book
:math:`q_0 < \dots < q_{K-1}` (:math:`K = 2^{\text{bits}}`):

.. math::
    s = \max_i |x_i|, \qquad c_i = \operatorname*{arg\,min}_k\, |x_i / s - q_k|,
    \qquad \hat x_i = s\, q_{c_i}

so each value is within half a code interval (times :math:`s`) of what it was. By
default the code is rounded stochastically instead (``rounding="stochastic"``): the
nearest code or its neighbour on the other side of :math:`x_i / s`, with the probabilities
that make the stored value right on average (see :func:`quantize_state` for why a slowly
moving second moment needs it).

Everything is element-wise but the block maxima, so that XLA fuses dequantization, the
inner update and quantization into the loops over each leaf, without a float32
temporary of the statistics: codes are decoded by arithmetic (:func:`_decode`, bit for
bit the code book) rather than a table gather, and the block maxima are integer maxima
of the magnitudes' bit patterns over short sub-blocks (:func:`_absmax_bits`).

Code books (:func:`code_book`): a *signed* dynamic map for statistics that take either
sign (first moments, momentum) and an *unsigned* one for non-negative statistics (second
moments). At 8 bits both are bitsandbytes' dynamic maps (``create_dynamic_map(signed)``:
a decimal exponent and a linear fraction, 256 values from :math:`\pm 10^{-6}` to
:math:`\pm 1` plus 0); at 4 bits the signed map is the same construction with 3
exponent bits (16 values) and the unsigned map is linear without zero,
:math:`\{1/16, \dots, 1\}` (torchao's, from Li et al.: the second moment sits under a
square root in the denominator, where a zero code would blow up the step).

Which map a leaf gets is decided by name: a leaf whose innermost named field (a
NamedTuple field or a dict key on its path) is in ``unsigned`` (default
:data:`UNSIGNED_FIELDS`: ``nu``, ``exp_avg_sq``, ``sum_of_squares`` ...) is
quantized with the unsigned map; every other floating-point leaf with the signed one,
which holds non-negative numbers too (with one bit less of resolution).

Blocks run along the last axis, ``block_size`` numbers each (the last block of a row
may be shorter). When the leaf is sharded along its last axis (a placed array, or an
``Explicit`` mesh axis under ``jit``), the block shrinks to the largest power of two
dividing the per-shard length, so that no block straddles two devices. Codes have the
leaf's shape (4-bit: half its last axis) and so follow its sharding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _dtypes, _validate
from gbopt._base import GradientTransformation, as_transform, expect_state, with_info

UNSIGNED_FIELDS: frozenset[str] = frozenset(
    {
        "nu",  # gbopt's and optax's second moments (adam, rmsprop, amsgrad, ...)
        "nu_max",  # optax's AMSGrad
        "nu_hat",
        "exp_avg_sq",  # PyTorch's name
        "max_exp_avg_sq",
        "sum_of_squares",  # optax's adagrad (scale_by_rss)
        "v",  # optax's adan, lamb-style names
        "v_row",  # adafactor's factored second moments
        "v_col",
    }
)
"""State field names quantized with the unsigned map by default (non-negative statistics)."""

_TINY = 1e-12  # the floor of a block's scale when dividing by it (torchao's)


class QuantizedArray(NamedTuple):
    """A floating-point statistic stored block-wise quantized.

    Attributes:
      codes: ``uint8`` codes, shaped like the statistic (4-bit: two codes per byte along
        the last axis, the first in the high nibble, so the last axis has half the
        length, rounded up).
      scale: the absmax of each block, shaped like the statistic with its last axis
        replaced by the number of blocks along it.
    """

    codes: jax.Array
    scale: jax.Array


class QuantizeStateState(NamedTuple):
    """State of :func:`quantize_state`.

    Attributes:
      inner_state: the inner transform's state, each quantized leaf replaced by a
        :class:`QuantizedArray`.
    """

    inner_state: Any


def _grid(n: int) -> np.ndarray:
    """``n`` float32 points from 0.1 to 1, each end's half rounded once from the exact value.

    The float32 grid PyTorch's ``linspace`` makes (a fused multiply-add from the nearer
    end), so that the maps below equal bitsandbytes' and torchao's bit for bit.
    """
    start, end = np.float32(0.1), np.float32(1.0)
    step = np.float64((end - start) / np.float32(n - 1))
    i = np.arange(n)
    from_start = np.float64(start) + step * i
    from_end = np.float64(end) - step * (n - 1 - i)
    return np.where(i < n // 2, from_start, from_end).astype(np.float32)


def _dynamic_map(signed: bool, exponent_bits: int, total_bits: int) -> np.ndarray:
    r"""The dynamic map of Dettmers (2016): a decimal exponent, then a linear fraction.

    For each exponent :math:`e = 0, \dots, E - 1`, the midpoints of an even grid of
    :math:`[0.1, 1]` with :math:`2^{e + b - 1 - E}` intervals (twice as many unsigned,
    which spend the sign bit on the fraction), times :math:`10^{e - E + 1}` and, signed,
    their negatives; plus 0 and 1: :math:`2^b` values for ``total_bits`` :math:`b` and
    ``exponent_bits`` :math:`E`. Computed in float32 as bitsandbytes does.
    """
    values = [np.float32(0), np.float32(1)]
    fraction_bits = total_bits - 1
    for e in range(exponent_bits):
        grid = _grid(2 ** (e + fraction_bits - exponent_bits + (0 if signed else 1)) + 1)
        means = (grid[:-1] + grid[1:]) / np.float32(2) * np.float32(10.0 ** (e - exponent_bits + 1))
        values += [*means, *(-means if signed else [])]
    assert len(values) == 2**total_bits
    return np.sort(np.asarray(values, np.float32))


@functools.cache
def code_book(bits: int, signed: bool) -> np.ndarray:
    """The sorted float32 values that ``bits``-bit codes stand for (see the module docstring).

    Args:
      bits: 8 or 4.
      signed: the map for statistics of either sign (``True``) or for non-negative ones.

    Returns:
      A read-only float32 array of ``2**bits`` increasing values in [-1, 1].
    """
    if bits == 8:
        book = _dynamic_map(signed, 7, 8)
    elif signed:
        book = _dynamic_map(True, 3, 4)
    else:
        book = (np.arange(1, 17, dtype=np.float64) / 16).astype(np.float32)
    book.setflags(write=False)
    return book


@functools.cache
def _dynamic_layout(bits: int, signed: bool) -> tuple:
    """Constants of the arithmetic nearest-code search in a dynamic map (float64 numbers).

    Returns ``(E, c, P, zero_up, one_up, decade_up)``: the number of decades ``E``, the
    log2 of the first decade's number of values ``c`` (decade ``e`` has ``2**(e + c)``),
    the number ``P`` of positive values below 1, the midpoints above which a magnitude
    leaves 0 for the first value and leaves the last value for 1, and the midpoints
    between consecutive decades.
    """
    exponent_bits = 7 if bits == 8 else 3
    c = bits - 1 - exponent_bits + (0 if signed else 1)
    positives = code_book(bits, signed).astype(np.float64)
    positives = positives[(positives > 0) & (positives < 1)]
    sizes = [2 ** (e + c) for e in range(exponent_bits)]
    firsts = np.cumsum([0, *sizes])[:-1]
    decade_up = tuple((positives[f - 1] + positives[f]) / 2 for f in firsts[1:])
    return (
        exponent_bits,
        c,
        len(positives),
        positives[0] / 2,
        (positives[-1] + 1) / 2,
        decade_up,
    )


def _encode_dynamic(y: jax.Array, bits: int, signed: bool) -> jax.Array:
    r"""The nearest code of a dynamic map, computed arithmetically (no table search).

    A magnitude's decade ``e`` is found by comparing it with the midpoints between
    decades; within a decade the values are evenly spaced,
    :math:`10^{e - E + 1} (0.1 + 0.9 (k + 1/2) / K_e)`, so the nearest is
    :math:`k = \lfloor (s - 0.1) K_e / 0.9 \rfloor` for the magnitude :math:`s` scaled to
    the decade, clipped to the decade. (A binary search over the sorted map, torchao's
    method, costs ten dependent table look-ups per number, which XLA:CPU runs about 40
    times slower.) Values on an exact midpoint may round to either neighbour.
    """
    exponent_bits, c, n_pos, zero_up, one_up, decade_up = _dynamic_layout(bits, signed)
    f32 = y.dtype
    a = jnp.abs(y) if signed else jnp.maximum(y, jnp.zeros((), f32))
    e = jnp.zeros(y.shape, jnp.int32)
    for t in decade_up:
        e = e + (a >= np.asarray(t, f32)).astype(jnp.int32)
    inverse = np.asarray(10.0 ** (exponent_bits - 1), f32)
    for d in range(1, exponent_bits):
        inverse = jnp.where(e == d, np.asarray(10.0 ** (exponent_bits - 1 - d), f32), inverse)
    size = jnp.left_shift(jnp.ones((), jnp.int32), e + c)
    k = jnp.floor((a * inverse - np.asarray(0.1, f32)) * (size.astype(f32) / np.asarray(0.9, f32)))
    k = jnp.clip(k.astype(jnp.int32), 0, size - 1)
    index = jnp.left_shift(jnp.ones((), jnp.int32), c) * (jnp.left_shift(1, e) - 1) + k
    is_zero = a < np.asarray(zero_up, f32)
    if signed:
        is_one = (y >= 0) & (a >= np.asarray(one_up, f32))
        code = jnp.where(y >= 0, n_pos + 1 + index, n_pos - 1 - index)
        code = jnp.where(is_zero, n_pos, jnp.where(is_one, 2 * n_pos + 1, code))
    else:
        is_one = a >= np.asarray(one_up, f32)
        code = jnp.where(is_zero, 0, jnp.where(is_one, n_pos + 1, 1 + index))
    return code.astype(jnp.uint8)


def _code_position(y: jax.Array, bits: int, signed: bool) -> jax.Array:
    r"""Where each of ``y`` lies among the codes, as a real number of code steps.

    A piecewise-linear map :math:`p` with :math:`p(q_i) = i` at the :math:`i`-th
    non-negative code value :math:`q_i` (0 for the value 0, the largest for 1) and
    linear between consecutive codes, of the magnitude :math:`|y|` (signed maps) or
    :math:`\max(y, 0)`. Computed from the map's construction, without decoding a code:
    in decade :math:`e` (found by comparing with each decade's first value) the
    :math:`K_e = 2^{e + c}` values are evenly spaced, :math:`\delta_e = 0.9 \cdot
    10^{e - E + 1} / K_e` apart from :math:`0.1 \cdot 10^{e - E + 1} + \delta_e / 2` on;
    the next decade's first value is :math:`3 \delta_e` above the last one (the code
    for 1, :math:`\delta_e / 2` above, after the last decade), and the first value of
    decade 0 is reached linearly from 0. The positions of the code values themselves
    are exact to within :math:`10^{-5}` of a step.
    """
    f32 = y.dtype
    a = jnp.abs(y) if signed else jnp.maximum(y, jnp.zeros((), f32))
    if bits == 4 and not signed:  # the linear map (k + 1) / 16: position k + 1
        return a * np.asarray(16, f32)
    exponent_bits, c = _dynamic_layout(bits, signed)[:2]
    firsts = [
        10.0 ** (e - exponent_bits + 1) * (0.1 + 0.45 / 2 ** (e + c)) for e in range(exponent_bits)
    ]
    e = jnp.zeros(y.shape, jnp.int32)
    inverse = jnp.full(y.shape, np.asarray(10.0 ** (exponent_bits - 1), f32))
    for d in range(1, exponent_bits):
        above = a >= np.asarray(firsts[d], f32)
        e = e + above.astype(jnp.int32)
        inverse = jnp.where(above, np.asarray(10.0 ** (exponent_bits - 1 - d), f32), inverse)
    size = jnp.left_shift(jnp.ones((), jnp.int32), e + c).astype(f32)
    # steps above the decade's first value
    t = (a * inverse - np.asarray(0.1, f32)) * (size / np.asarray(0.9, f32)) - np.asarray(0.5, f32)
    last = size - np.asarray(1, f32)
    gap = jnp.where(e == exponent_bits - 1, np.asarray(0.5, f32), np.asarray(3, f32))
    t = jnp.minimum(t, last) + jnp.maximum(t - last, np.asarray(0, f32)) / gap
    t = jnp.where(a < np.asarray(firsts[0], f32), a / np.asarray(firsts[0], f32) - 1, t)
    before = jnp.left_shift(jnp.ones((), jnp.int32), c) * (jnp.left_shift(1, e) - 1)
    return before.astype(f32) + np.asarray(1, f32) + t


def _encode(y: jax.Array, bits: int, signed: bool, noise=None) -> jax.Array:
    """The index of the nearest code of ``code_book(bits, signed)`` to each of ``y``.

    ``y`` is the value divided by its block's scale; values outside [-1, 1] (a scale
    rounded down in a narrow dtype) take the end codes. With ``noise`` (uniform in
    [0, 1), shaped like ``y``), rounding is stochastic: of the two codes around ``y``,
    the upper with probability ``(y - q) / (q' - q)`` (the lower ``q``, the upper
    ``q'``), so that the code's value is ``y`` on average: the floor of
    :func:`_code_position` plus the noise. Outside the map's range (at 4 bits,
    unsigned: below 1/16; signed: below the most negative code) the end code stays.
    """
    if noise is not None:
        # the position of 1: the signed maps' code for 1 is that many above zero's
        top = 2 ** (bits - 1) if signed else 16 if bits == 4 else 2**bits - 1
        step = jnp.floor(_code_position(y, bits, signed) + noise.astype(y.dtype))
        step = jnp.clip(step.astype(jnp.int32), 0, top)
        if bits == 4 and not signed:
            return (jnp.maximum(step, 1) - 1).astype(jnp.uint8)
        if not signed:
            return step.astype(jnp.uint8)
        n_pos = top - 1
        return jnp.where(y < 0, n_pos - jnp.minimum(step, n_pos), n_pos + step).astype(jnp.uint8)
    if bits == 4 and not signed:  # the linear map k / 16, k = 1..16
        k = jnp.floor(y * np.asarray(16, y.dtype) + np.asarray(0.5, y.dtype))
        return (jnp.clip(k, 1, 16) - 1).astype(jnp.uint8)
    return _encode_dynamic(y, bits, signed)


def _uniform_noise(y: jax.Array) -> jax.Array:
    """A pseudo-random number in [0, 1) for each of ``y``, from its bits and its position.

    Stateless and deterministic: an integer hash (Wellons' ``lowbias32``) of the float32
    bits of each number mixed with its index. A statistic that moves between steps gets
    fresh bits each step, so the rounding decisions are independent in effect; element-
    wise, so it fuses with the rest of the quantization.
    """
    u32 = jnp.uint32
    index = jnp.zeros(y.shape, u32)
    stride = 1
    for axis in reversed(range(y.ndim)):
        index = index + jax.lax.broadcasted_iota(u32, y.shape, axis) * np.uint32(stride % 2**32)
        stride *= y.shape[axis]
    h = jax.lax.bitcast_convert_type(y.astype(jnp.float32), u32) ^ (index * np.uint32(0x9E3779B9))
    h = h ^ (h >> 16)
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * np.uint32(0x846CA68B)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) * np.float32(2.0**-24)


@functools.cache
def _finest_step(bits: int, signed: bool) -> int:
    """The float32 grid step of a dynamic map's last decade, in units of 2**-31.

    Decade ``e`` has ``2**(e + c)`` intervals: its step, ``float32(0.9) / 2**(e + c)``
    (exact: a power of two), is this one shifted left by ``E - 1 - e``. 0.1 in float32
    and every step are whole multiples of 2**-31, and so is each grid point:
    :func:`_decode` rebuilds the grid in exact integer arithmetic.
    """
    exponent_bits, c = _dynamic_layout(bits, signed)[:2]
    units = []
    for e in range(exponent_bits):
        step = (np.float32(1.0) - np.float32(0.1)) / np.float32(2 ** (e + c))
        units.append(float(step) * 2.0**31)
    finest = int(units[-1])
    assert all(u == finest << (exponent_bits - 1 - e) for e, u in enumerate(units))
    return finest


_POINT_ONE = int(float(np.float32(0.1)) * 2.0**31)  # float32(0.1) in units of 2**-31
_INT_MIN = np.int32(-(2**31))
assert _POINT_ONE == float(np.float32(0.1)) * 2.0**31


def _decode(codes: jax.Array, bits: int, signed: bool) -> jax.Array:
    r"""``code_book(bits, signed)[codes]`` in float32, computed element-wise (no table).

    A table look-up is a gather, which XLA:CPU does not fuse into the arithmetic that
    uses it: each dequantized statistic would be a float32 temporary the size of the
    parameters. Instead, a code's decade :math:`e` and position :math:`k` in it come from
    integer arithmetic (the decade is the bit length of the position among the positive
    values), and the value is rebuilt the way :func:`_dynamic_map` builds it: the two
    grid points around it, each the exact sum :math:`0.1 + k\,\delta_e` (or
    :math:`1 - (K_e - k)\,\delta_e`) in units of :math:`2^{-31}`, converted to float32
    (one rounding to nearest, as NumPy's float64-to-float32 conversion), then their
    float32 mean times :math:`10^{e - E + 1}`. Every code of every map gives the
    table's value bit for bit (``tests/test_quantize.py`` checks all of them); no
    product is rounded before an addition, so a fused multiply-add changes nothing.
    """
    i32, f32 = jnp.int32, jnp.float32
    code = codes.astype(i32)
    if bits == 4 and not signed:  # the linear map (k + 1) / 16, exact in float32
        return (code + 1).astype(f32) * np.float32(1 / 16)
    exponent_bits, c, n_pos = _dynamic_layout(bits, signed)[:3]
    if signed:  # n_pos is 0; the sign multiplies the magnitude's value (0 for code n_pos)
        offset = code - n_pos
        magnitude, sign = jnp.abs(offset), jnp.sign(offset).astype(f32)
    else:
        magnitude, sign = code, None
    j = jnp.maximum(magnitude - 1, 0)  # position among the positive values below 1
    e = 31 - jax.lax.clz(jnp.right_shift(j, c) + 1)  # decade e holds 2**(e + c) values
    size = jnp.left_shift(1, e + c)
    k = j - (size - (1 << c))
    # The code for 1 is position 0 of a decade E whose step is 0 (XLA shifts by a
    # negative amount to 0): float32(0.1) * 10 rounds to 1.
    step = jnp.left_shift(_finest_step(bits, signed), exponent_bits - 1 - e)
    power = jnp.full(code.shape, np.float32(10.0 ** (1 - exponent_bits)), f32)
    for d in range(1, exponent_bits + 1):
        power = jnp.where(e == d, np.float32(10.0 ** (d - exponent_bits + 1)), power)
    half = jnp.right_shift(size + 1, 1)

    def grid(i):  # _grid's i-th point: from 0.1 in the first half, from 1 in the second
        # 2**31 - x as int32: INT_MIN - x wraps to it, but for x = 0 (the last point, 1),
        # where it stays INT_MIN, whose magnitude is 2**31 again
        units = jnp.where(i < half, _POINT_ONE + step * i, _INT_MIN - step * (size - i))
        return jnp.abs(units.astype(f32)) * np.float32(2.0**-31)

    value = (grid(k) + grid(k + 1)) / np.float32(2) * power
    return value * sign if signed else jnp.where(code == 0, np.float32(0), value)


def _magnitude_bits(x: jax.Array) -> jax.Array:
    """``|x|``'s bit pattern as a signed integer: ordered as the magnitudes (NaN on top)."""
    ints = jnp.dtype(f"int{8 * x.dtype.itemsize}")
    return jax.lax.bitcast_convert_type(x, ints) & np.asarray(np.iinfo(ints).max, ints)


def _parts(n: int) -> int | None:
    """Into how many equal sub-blocks of at most 64 numbers a block of ``n`` is cut.

    Four when that works; ``None`` when no count up to 8 does (and for ``n`` over 256).
    """
    if n > 256:
        return None
    return next((p for p in (4, 5, 6, 7, 8, 2, 3, 1) if n % p == 0 and n // p <= 64), None)


def _row_block(n: int, b: int) -> int:
    """The block along a last axis of ``n``: a row shorter than ``b`` is one block.

    Such a row then goes the whole-block way (one reshape, fused by XLA) instead of the
    way of a shorter last block, when :func:`_parts` can cut it; the blocks are the same.
    """
    return n if n < b and _parts(n) else b


def _absmax_bits(x: jax.Array, b: int) -> jax.Array:
    """The largest magnitude of each block of ``b`` along the last axis, as bit patterns.

    Computed so that XLA fuses it with the arithmetic that produces ``x``. On XLA:CPU a
    floating-point ``max`` reduction goes to a library kernel, or to a tree of
    reduce-windows, that reads a materialized input: the new statistic would be a
    float32 temporary the size of the parameters. The magnitudes' bit patterns, as
    integers, order as the magnitudes do (NaN above infinity, as ``max`` propagates
    it); an integer maximum over at most 64 numbers fuses with its producer (XLA splits a
    longer one, and does not duplicate the producer into more than a few sub-blocks).
    So a block of ``b`` (a power of two, or a whole row shorter than ``b`` that
    :func:`_parts` can cut) is cut into four sub-blocks (up to eight when its length is
    not a multiple of four) whose element-wise maximum is reduced (blocks longer than
    256: chunks of 256, then the maximum of their maxima), and a last, shorter block of
    a longer row into slices of 64. No padding: a padded copy would be materialized too.
    """
    lead, n = x.shape[:-1], x.shape[-1]
    b = _row_block(n, b)
    full, rest = divmod(n, b)
    maxima = []
    if full:
        chunk = min(b, 256)
        parts = _parts(chunk)
        sub = x[..., : full * b].reshape(*lead, full * (b // chunk), parts, chunk // parts)
        top = functools.reduce(jnp.maximum, [_magnitude_bits(sub[..., i, :]) for i in range(parts)])
        top = jnp.max(top, axis=-1)
        if b > chunk:
            top = jnp.max(top.reshape(*lead, full, b // chunk), axis=-1)
        maxima.append(top)
    if rest:
        tail = x[..., full * b :]
        slices = [
            jnp.max(_magnitude_bits(tail[..., i : i + 64]), axis=-1) for i in range(0, rest, 64)
        ]
        maxima.append(functools.reduce(jnp.maximum, slices)[..., None])
    return maxima[0] if len(maxima) == 1 else jnp.concatenate(maxima, axis=-1)


def _blockwise(op, x: jax.Array, scale: jax.Array, b: int) -> jax.Array:
    """``op(x, s)`` with each number's block scale ``s``: ``scale`` is (..., ceil(n / b)).

    Whole blocks are reshaped to (..., n // b, b) against ``scale[..., None]``. When a
    last, shorter block remains, the scales are broadcast to (..., ceil(n / b), b),
    flattened and cut to ``n`` instead: a broadcast, a reshape and a slice, which XLA
    fuses into the producers and users. (Computing the shorter block on its own and
    concatenating the two pieces made XLA:CPU materialize both, float32 temporaries the
    size of the statistic.)
    """
    lead, n = x.shape[:-1], x.shape[-1]
    b = _row_block(n, b)
    full, rest = divmod(n, b)
    if not rest:
        return op(x.reshape(*lead, full, b), scale[..., :full, None]).reshape(*lead, n)
    blocks = full + 1
    each = jnp.broadcast_to(scale[..., :blocks, None], (*lead, blocks, b))
    return op(x, each.reshape(*lead, blocks * b)[..., :n])


def _pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two that divides ``n`` and is at most ``cap``."""
    b = cap
    while b > 1 and n % b:
        b //= 2
    return b


def _last_axis_shards(leaf: Any) -> int:
    """Into how many shards the sharding of ``leaf`` (when known) splits its last axis."""
    ndim = np.ndim(leaf)
    if ndim == 0:
        return 1
    sharding = getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None
    if isinstance(leaf, jax.core.Tracer) or sharding is None:
        try:
            sharding = jax.typeof(leaf).sharding
        except Exception:  # host data, or a JAX without typed shardings
            return 1
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is None or mesh is None or len(spec) < ndim:
        return 1
    entry = spec[ndim - 1]
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    shape = dict(mesh.shape)
    return math.prod(shape.get(name, 1) for name in names)


def _block_for(n: int, block_size: int, shards: int) -> int:
    """The block length along a last axis of ``n`` split into ``shards`` shards."""
    if shards > 1 and n % shards == 0:
        return _pow2_divisor(n // shards, block_size)
    return block_size


def _block_from_scale(n: int, blocks: int, block_size: int) -> int:
    """The block length that cut a last axis of ``n`` into ``blocks`` blocks.

    Blocks are powers of two up to ``block_size``, and ``ceil(n / b)`` takes a
    different value for each power of two below ``n``, so the layout needs no record.
    """
    b = block_size
    while b > 1 and -(-n // b) != blocks:
        b //= 2
    return b


def _quantize(
    x: jax.Array, bits: int, signed: bool, b: int, scale_dtype, stochastic: bool = False
) -> QuantizedArray:
    n = x.shape[-1]
    wide = _dtypes.cast(x, _dtypes.state_dtype(x.dtype))
    top = _absmax_bits(wide, b)
    scale = _dtypes.cast(jax.lax.bitcast_convert_type(top, wide.dtype), scale_dtype)
    divisor = jnp.maximum(_dtypes.cast(scale, wide.dtype), _TINY)
    y = _blockwise(jnp.divide, wide, divisor, b)
    codes = _encode(y, bits, signed, _uniform_noise(y) if stochastic else None)
    if bits == 4:
        # pairs along the last axis, the first in the high nibble: a reduction over each
        # pair (strided slices of the codes made XLA:CPU run the whole quantization ~8x
        # slower, element by element)
        if n % 2:
            codes = jnp.pad(codes, [(0, 0)] * (x.ndim - 1) + [(0, 1)])
        pairs = codes.reshape(*codes.shape[:-1], -1, 2) << np.asarray([4, 0], np.uint8)
        codes = jax.lax.reduce(pairs, np.uint8(0), jax.lax.bitwise_or, (x.ndim,))
    return QuantizedArray(codes, scale)


# ``init`` quantizes the inner transform's initial state, usually outside ``jit``: compiled
# as one program per shape rather than run operation by operation (each of its hundred
# operations a small program of its own to compile, for every new shape).
_quantize_compiled = jax.jit(_quantize, static_argnums=(1, 2, 3, 4, 5))


def _dequantize(q: QuantizedArray, like: Any, bits: int, signed: bool, block_size: int):
    shape, dtype = like.shape, like.dtype
    codes = q.codes
    if bits == 4:
        # the high and the low nibbles side by side, interleaved by a reshape: XLA fuses
        # it into the users (broadcasting each byte and shifting it by [4, 0] instead made
        # XLA:CPU decode ~5x slower, element by element)
        pairs = jnp.stack([codes >> 4, codes & np.uint8(0x0F)], axis=-1)
        codes = pairs.reshape(*codes.shape[:-1], -1)[..., : shape[-1]]
    b = _block_from_scale(shape[-1], q.scale.shape[-1], block_size)
    wide = _dtypes.state_dtype(dtype)
    values = _dtypes.cast(_decode(codes, bits, signed), wide)
    return _dtypes.cast(_blockwise(jnp.multiply, values, _dtypes.cast(q.scale, wide), b), dtype)


def _field_name(path: tuple, param_paths: frozenset) -> str | None:
    """The name of the state field a statistic sits in.

    That is the innermost NamedTuple field or dict key of ``path`` once the parameter
    tree's own path (its longest suffix that is a path of the parameters) is taken off.
    """
    path = tuple(path)
    for cut in range(len(path) + 1):
        if path[cut:] in param_paths:
            path = path[:cut]
            break
    for entry in reversed(path):
        if isinstance(entry, jax.tree_util.GetAttrKey):
            return entry.name
        if isinstance(entry, jax.tree_util.DictKey) and isinstance(entry.key, str):
            return entry.key
    return None


def _paths(tree: Any) -> frozenset:
    return frozenset(tuple(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


def _is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedArray)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), tree)


def quantize_state(
    transform: Any,
    *,
    bits: int = 8,
    block_size: int = 256,
    min_size: int = 4096,
    unsigned: Collection[str] = UNSIGNED_FIELDS,
    scale_dtype: Any = jnp.float32,
    rounding: str = "stochastic",
) -> GradientTransformation:
    r"""Stores the floating-point statistics of ``transform`` block-wise quantized.

    Each floating-point leaf of ``transform``'s state with at least ``min_size``
    elements is kept as a :class:`QuantizedArray` (codes and one scale per block, see
    :mod:`gbopt._quantize`); ``update`` rebuilds it in the dtype ``transform`` built it
    in, runs ``transform.update`` (whose arithmetic is unchanged: at least float32) and
    quantizes the new value:

    .. math::
        (u, S') = T.\text{update}(g, \operatorname{deq}(Q)), \qquad Q' = \operatorname{q}(S')

    Smaller leaves, integer leaves (step counts) and PRNG keys stay as they are.

    Memory per parameter of Adam (two statistics): 8 bytes in float32, 2 + 8/256 bytes
    at 8 bits with blocks of 256, 1 + 8/128 at 4 bits with blocks of 128.

    Args:
      transform: any gradient transformation (gbopt or optax).
      bits: 8 or 4 bits per stored number.
      block_size: numbers per scale along the last axis, a power of two (bitsandbytes
        and torchao's 8-bit AdamW: 256; torchao's 4-bit AdamW: 128).
      min_size: leaves with fewer elements stay unquantized (bitsandbytes' 4096: for
        small tensors the scales would cost more than they save, and biases and norms are
        where quantization error hurts most).
      unsigned: names of state fields holding non-negative statistics, quantized with
        the unsigned map (default :data:`UNSIGNED_FIELDS`); all other leaves take the
        signed map. A negative number in an unsigned leaf is stored as its smallest
        code (0, at 4 bits 1/16 of the scale): name only non-negative statistics.
      scale_dtype: floating dtype the scales are stored in (float32 by default;
        bfloat16 halves their cost and rounds each scale by up to 0.4 %).

      rounding: how a new statistic is rounded to a code. ``"stochastic"`` (default):
        one of the two codes around it, the upper with a probability proportional to the
        distance from the lower, so that the stored statistic is right on average; the
        random numbers are a hash of each number's bits and position (no key, no
        state: the same run gives the same codes). ``"nearest"``: the nearest code, as
        bitsandbytes and torchao (their codes, step for step). Nearest rounding biases
        a slowly moving average: Adam's second moment (``b2 = 0.999``) moves by 0.1 % a
        step, below the map's resolution, so its code sticks while the bias correction
        keeps shrinking it, and the steps come out larger (digits MLP, 5 seeds: final
        loss against float32's -3.0 % at 8 bits and -3.1 % at 4 bits with nearest
        rounding, -0.1 % and +2.4 % with stochastic rounding; ``benchmarks/RESULTS.md``).

    Returns:
      A transform with state :class:`QuantizeStateState`.

    Raises:
      ValueError: ``bits`` not 4 or 8, ``block_size`` not a positive power of two (or 1
        with ``bits=4``), ``min_size`` negative, ``rounding`` not one of the above.
      TypeError: ``transform`` not a transformation, ``scale_dtype`` not a floating
        dtype, ``unsigned`` not a collection of names.

    Example:
      >>> import jax, jax.numpy as jnp, gbopt
      >>> tx = gbopt.quantize_state(gbopt.adam(1e-3), bits=8, min_size=0)
      >>> state = tx.init({"w": jnp.zeros((4, 256))})
      >>> sorted({x.dtype.name for x in jax.tree.leaves(state)})  # count, scales, codes
      ['float32', 'int32', 'uint8']

    References:
      Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
      Quantization", ICLR 2022; Li, Chen & Zhu, "Memory Efficient Optimizers with 4-bit
      States", NeurIPS 2023.
    """
    inner = as_transform(transform)
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"`bits` must be 8 or 4 (bits per stored number); got {bits!r}.")
    block_size = _validate.whole_number("block_size", block_size, 1)
    if block_size & (block_size - 1):
        raise ValueError(
            f"`block_size` must be a positive power of two (e.g. 256 or 128); got {block_size}."
        )
    if bits == 4 and block_size < 2:
        raise ValueError("`block_size` must be at least 2 with `bits=4`; got 1.")
    min_size = _validate.whole_number("min_size", min_size, 0)
    if isinstance(unsigned, str) or not all(isinstance(n, str) for n in unsigned):
        raise TypeError(
            "`unsigned` must be a collection of state field names, e.g. {'nu'}; got "
            f"{unsigned!r}."
        )
    unsigned = frozenset(unsigned)
    try:
        scale_dtype = jnp.dtype(scale_dtype)
    except TypeError:
        scale_dtype = None
    if scale_dtype is None or not jnp.issubdtype(scale_dtype, jnp.floating):
        raise TypeError(
            "`scale_dtype` must be a floating dtype such as jnp.float32 or jnp.bfloat16."
        )

    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"`rounding` must be 'stochastic' or 'nearest'; got {rounding!r}.")
    stochastic = rounding == "stochastic"

    def chosen(leaf) -> bool:
        dtype = getattr(leaf, "dtype", None) or np.asarray(leaf).dtype
        return (
            not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
            and jnp.issubdtype(dtype, jnp.floating)
            and np.ndim(leaf) >= 1
            and np.size(leaf) >= max(min_size, 1)
        )

    def init_fn(params):
        state = inner.init(params)
        param_paths = _paths(params)

        def pack(path, leaf):
            if not chosen(leaf):
                return leaf
            signed = _field_name(path, param_paths) not in unsigned
            b = _block_for(np.shape(leaf)[-1], block_size, _last_axis_shards(leaf))
            return _quantize_compiled(_dtypes.as_array(leaf), bits, signed, b, scale_dtype)

        return QuantizeStateState(jax.tree_util.tree_map_with_path(pack, state))

    def update_fn(updates, state, params=None, **extra_args):
        expect_state(state, QuantizeStateState, "quantize_state")
        template = jax.eval_shape(inner.init, _abstract(updates if params is None else params))
        t_paths, t_def = jax.tree_util.tree_flatten_with_path(template)
        stored = t_def.flatten_up_to(state.inner_state)
        param_paths = _paths(updates)
        signs = [_field_name(path, param_paths) not in unsigned for path, _ in t_paths]
        plain = [
            _dequantize(s, t, bits, sign, block_size) if _is_quantized(s) else s
            for s, (_, t), sign in zip(stored, t_paths, signs, strict=True)
        ]
        updates, new_inner = inner.update(updates, t_def.unflatten(plain), params, **extra_args)
        new_leaves = t_def.flatten_up_to(new_inner)
        packed = [
            _quantize(
                _dtypes.as_array(x),
                bits,
                sign,
                _block_from_scale(np.shape(x)[-1], s.scale.shape[-1], block_size),
                s.scale.dtype,
                stochastic,
            )
            if _is_quantized(s)
            else x
            for x, s, sign in zip(new_leaves, stored, signs, strict=True)
        ]
        return updates, QuantizeStateState(t_def.unflatten(packed))

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "quantize_state",
        "wrapper",
        hyperparams={
            "bits": bits,
            "block_size": block_size,
            "min_size": min_size,
            "rounding": rounding,
        },
        children=(inner,),
    )
