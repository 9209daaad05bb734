r"""A small character-level transformer language model, in pure JAX, on Python's own source.

A realistic workload for optimizers that no optimizer here was tuned on, with nothing to
download: the text is the standard library's ``.py`` files, which ship with every Python
(``sysconfig.get_paths()["stdlib"]``). The model reads bytes (a vocabulary of 256) and
predicts the next byte; its loss is the mean cross-entropy in nats per byte.

* :func:`load_corpus` lists the standard library's ``.py`` files (sorted by path, without
  ``site-packages``), shuffles that list with ``seed``, concatenates the files and keeps
  the first ``n_bytes`` bytes; the last ``valid_fraction`` of them is the held-out
  validation text. The same Python installation and the same arguments give the same
  bytes.
* :func:`init_params` builds the parameter tree of a pre-LayerNorm GPT-style decoder
  (:class:`CharLMConfig` sets its sizes: the default has about 0.8 M parameters, a tiny
  one for tests about 10 k).
* :func:`loss` is the next-byte cross-entropy of a batch; :func:`sample_batch` draws a
  batch of random windows (a pure JAX function of a key, so that it can run inside
  ``jit``, ``lax.scan`` or ``vmap``); :func:`eval_batch` and :func:`evaluate` give a
  fixed validation loss.

The parameter tree is a dict::

    {"embed": (V, d), "pos_embed": (T, d),
     "blocks": [{"ln1": {"scale": (d,), "bias": (d,)},
                 "attn": {"wq": (d, d), "wk": (d, d), "wv": (d, d), "wo": (d, d)},
                 "ln2": {...}, "mlp": {"w_in": (d, f), "b_in": (f,),
                                       "w_out": (f, d), "b_out": (d,)}}, ...],
     "ln_f": {...}, "head": (d, V)}

so that the hidden matrices (``wq`` … ``w_out``) come in a few shapes repeated over the
layers, as in every transformer, and the embeddings, the output head, the norms and the
biases are separate leaves that a matrix optimizer leaves to AdamW.

This module is not imported by ``import gbopt``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sysconfig
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

VOCAB_SIZE = 256  # bytes


@dataclasses.dataclass(frozen=True)
class CharLMConfig:
    """The sizes of the model.

    Attributes:
      seq_len: the context length :math:`T` (also the number of position embeddings).
      d_model: the width :math:`d`; a multiple of ``n_heads``.
      n_layers: the number of transformer blocks.
      n_heads: the number of attention heads.
      d_ff: the hidden width of each MLP (``None``: ``4 * d_model``).
      dtype: the parameters' dtype (``"float32"``; ``"float64"`` for reference tests).
    """

    seq_len: int = 128
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int | None = None
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("seq_len", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"CharLMConfig: `{name}` must be a whole number >= 1, got {value!r}."
                )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"CharLMConfig: `d_model` ({self.d_model}) must be a multiple of `n_heads` "
                f"({self.n_heads}); change one of them."
            )
        if self.d_ff is not None and (not isinstance(self.d_ff, int) or self.d_ff < 1):
            raise ValueError(
                f"CharLMConfig: `d_ff` must be a whole number >= 1 or None, got {self.d_ff!r}."
            )

    @property
    def ff(self) -> int:
        """The MLP's hidden width."""
        return 4 * self.d_model if self.d_ff is None else self.d_ff


TINY = CharLMConfig(seq_len=16, d_model=16, n_layers=1, n_heads=2)
"""A model of about 10 k parameters, for tests."""


class Corpus(NamedTuple):
    """Bytes of text split into training and validation parts.

    Attributes:
      train: the training bytes, a ``uint8`` NumPy array.
      valid: the held-out validation bytes (the end of the text), ``uint8``.
      files: the files the text was read from, relative to the standard library, in order.
    """

    train: np.ndarray
    valid: np.ndarray
    files: tuple[str, ...]


def stdlib_files() -> list[str]:
    """The standard library's ``.py`` files, relative paths, sorted (without site-packages)."""
    root = sysconfig.get_paths()["stdlib"]
    found = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [
            s for s in subdirs if s not in ("site-packages", "dist-packages", "__pycache__")
        ]
        for name in names:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


def load_corpus(n_bytes: int = 2_000_000, seed: int = 0, *, valid_fraction: float = 0.1) -> Corpus:
    """Reads ``n_bytes`` of the standard library's source code.

    Args:
      n_bytes: how many bytes to read in all (training and validation).
      seed: shuffles the sorted file list (``numpy.random.default_rng(seed).permutation``),
        so that the text mixes modules of every kind.
      valid_fraction: the fraction of the bytes, at the end, held out for validation.

    Returns:
      A :class:`Corpus`.

    Raises:
      ValueError: if ``n_bytes`` is not a whole number >= 1000, ``valid_fraction`` is not in
        (0, 1), or the standard library holds fewer than ``n_bytes`` bytes of source.
    """
    if not isinstance(n_bytes, int) or isinstance(n_bytes, bool) or n_bytes < 1000:
        raise ValueError(f"load_corpus: `n_bytes` must be a whole number >= 1000, got {n_bytes!r}.")
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(
            f"load_corpus: `valid_fraction` must be in (0, 1), got {valid_fraction!r}."
        )
    root = sysconfig.get_paths()["stdlib"]
    files = stdlib_files()
    order = np.random.default_rng(seed).permutation(len(files))
    chunks, used, total = [], [], 0
    for i in order:
        with open(os.path.join(root, files[i]), "rb") as f:
            data = f.read(n_bytes - total)
        if not data:
            continue
        chunks.append(data)
        used.append(files[i])
        total += len(data)
        if total >= n_bytes:
            break
    if total < n_bytes:
        raise ValueError(
            f"load_corpus: the standard library at {root} holds only {total} bytes of .py "
            f"source; ask for `n_bytes` <= {total}."
        )
    text = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    n_valid = max(1, int(round(n_bytes * valid_fraction)))
    return Corpus(train=text[:-n_valid].copy(), valid=text[-n_valid:].copy(), files=tuple(used))


def init_params(key: jax.Array, config: CharLMConfig = CharLMConfig()) -> dict[str, Any]:
    r"""Initial parameters: normal(0, 0.02) matrices, residual projections scaled down.

    The output projections of attention and MLP (``wo``, ``w_out``) have standard
    deviation :math:`0.02 / \sqrt{2 L}` (GPT-2's rule); norms start at scale 1, bias 0;
    biases at 0.

    Args:
      key: a PRNG key.
      config: the model's sizes.

    Returns:
      The parameter tree (see the module's docstring).
    """
    dtype = jnp.dtype(config.dtype)
    d, f, L = config.d_model, config.ff, config.n_layers
    std, std_out = 0.02, 0.02 / math.sqrt(2 * L)
    keys = iter(jax.random.split(key, 3 + 6 * L))

    def normal(shape, scale):
        return (scale * jax.random.normal(next(keys), shape, dtype=jnp.float32)).astype(dtype)

    def norm():
        return {"scale": jnp.ones((d,), dtype), "bias": jnp.zeros((d,), dtype)}

    blocks = []
    for _ in range(L):
        blocks.append(
            {
                "ln1": norm(),
                "attn": {
                    "wq": normal((d, d), std),
                    "wk": normal((d, d), std),
                    "wv": normal((d, d), std),
                    "wo": normal((d, d), std_out),
                },
                "ln2": norm(),
                "mlp": {
                    "w_in": normal((d, f), std),
                    "b_in": jnp.zeros((f,), dtype),
                    "w_out": normal((f, d), std_out),
                    "b_out": jnp.zeros((d,), dtype),
                },
            }
        )
    return {
        "embed": normal((VOCAB_SIZE, d), std),
        "pos_embed": normal((config.seq_len, d), std),
        "blocks": blocks,
        "ln_f": norm(),
        "head": normal((d, VOCAB_SIZE), std),
    }


def count_params(params) -> int:
    """The number of scalars in a parameter tree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _layer_norm(x, p, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def logits(
    params: dict[str, Any], tokens: jax.Array, config: CharLMConfig | None = None
) -> jax.Array:
    """The next-byte logits, shape ``tokens.shape + (256,)``, for ``tokens`` of shape (B, T)."""
    config = _config_for(params, config)
    _, t = tokens.shape
    if t > params["pos_embed"].shape[0]:
        raise ValueError(
            f"charlm: the sequences have length {t}, longer than the model's context "
            f"{params['pos_embed'].shape[0]} (`seq_len`)."
        )
    h = config.n_heads
    x = params["embed"][tokens] + params["pos_embed"][:t]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    for block in params["blocks"]:
        y = _layer_norm(x, block["ln1"])
        a = block["attn"]

        def heads(w, y=y):
            z = y @ w
            return z.reshape(*z.shape[:-1], h, z.shape[-1] // h)  # (B, T, H, dh)

        q, k, v = heads(a["wq"]), heads(a["wk"]), heads(a["wv"])
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        x = x + attn.reshape(*attn.shape[:2], -1) @ a["wo"]
        y = _layer_norm(x, block["ln2"])
        m = block["mlp"]
        x = x + jax.nn.gelu(y @ m["w_in"] + m["b_in"]) @ m["w_out"] + m["b_out"]
    return _layer_norm(x, params["ln_f"]) @ params["head"]


def _config_for(params, config):
    if config is None:
        config = CharLMConfig()
        d = params["embed"].shape[-1]
        if d % config.n_heads:
            raise ValueError(
                f"charlm: the parameters have width {d}, not a multiple of the default "
                f"{config.n_heads} heads; pass the model's `config`."
            )
    return config


def loss(params: dict[str, Any], batch: dict[str, jax.Array], config: CharLMConfig | None = None):
    r"""The mean next-byte cross-entropy (nats per byte) of a batch.

    .. math:: \ell = -\frac{1}{BT} \sum_{b,t} \log \operatorname{softmax}(z_{b,t})_{y_{b,t}}

    Args:
      params: the parameter tree of :func:`init_params`.
      batch: ``{"inputs": (B, T) int, "targets": (B, T) int}`` (see :func:`sample_batch`).
      config: the model's sizes; only ``n_heads`` is read (``None``: the default, 4).

    Returns:
      A scalar in the parameters' dtype.
    """
    z = logits(params, batch["inputs"], config)
    logp = jax.nn.log_softmax(z, axis=-1)
    picked = jnp.take_along_axis(logp, batch["targets"][..., None].astype(jnp.int32), axis=-1)
    return -jnp.mean(picked)


def sample_batch(key: jax.Array, data, batch_size: int, seq_len: int) -> dict[str, jax.Array]:
    """A batch of ``batch_size`` random windows of ``data`` (pure JAX; jit/vmap/scan safe).

    Args:
      key: a PRNG key.
      data: the bytes, a 1-D integer array (NumPy or JAX) longer than ``seq_len``.
      batch_size: the number of windows.
      seq_len: the length of each window.

    Returns:
      ``{"inputs": (B, T) int32, "targets": (B, T) int32}``, the targets shifted by one byte.
    """
    data = jnp.asarray(data)
    if data.ndim != 1 or data.shape[0] <= seq_len:
        raise ValueError(
            f"sample_batch: `data` must be 1-D and longer than `seq_len` ({seq_len}), "
            f"got shape {data.shape}."
        )
    starts = jax.random.randint(key, (batch_size,), 0, data.shape[0] - seq_len)
    window = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (seq_len + 1,)))(starts)
    window = window.astype(jnp.int32)
    return {"inputs": window[:, :-1], "targets": window[:, 1:]}


def eval_batch(data, seq_len: int, n_windows: int = 64) -> dict[str, jax.Array]:
    """A fixed validation batch: ``n_windows`` windows evenly spaced over ``data``.

    Raises:
      ValueError: if ``data`` is too short for ``n_windows`` windows of ``seq_len + 1``.
    """
    data = np.asarray(data)
    span = data.shape[0] - (seq_len + 1)
    if span < 0:
        raise ValueError(
            f"eval_batch: `data` has {data.shape[0]} bytes, fewer than one window of {seq_len + 1}."
        )
    starts = np.linspace(0, span, n_windows).astype(np.int64)
    window = np.stack([data[s : s + seq_len + 1] for s in starts]).astype(np.int32)
    return {"inputs": jnp.asarray(window[:, :-1]), "targets": jnp.asarray(window[:, 1:])}


def evaluate(params, batch, config: CharLMConfig | None = None, *, chunk: int = 32):
    """The validation loss on a fixed batch (of :func:`eval_batch`), computed in chunks.

    Args:
      params: the parameter tree.
      batch: a batch of :func:`eval_batch`.
      config: the model's sizes (only ``n_heads`` is read).
      chunk: how many windows go through the model at once (bounds the memory).

    Returns:
      The mean cross-entropy over all windows, in nats per byte (a scalar).
    """
    n = batch["inputs"].shape[0]
    total = 0.0
    for start in range(0, n, chunk):
        part = {name: x[start : start + chunk] for name, x in batch.items()}
        total = total + loss(params, part, config) * part["inputs"].shape[0]
    return total / n
