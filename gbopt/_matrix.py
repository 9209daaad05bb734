r"""Matrix primitives: orthogonalisation, Kronecker factors, roots, eigenbases, grafting.

The optimizers of :mod:`gbopt._matrix_optimizers` (Muon, Shampoo, SOAP) treat a weight
matrix :math:`W \in \mathbb{R}^{m \times n}` as a matrix. They are built from the
array-level primitives here, each a pure function of (batches of) matrices:

* :func:`newton_schulz`: the quintic Newton–Schulz iteration that maps :math:`G = U S V^T`
  to about :math:`U V^T` (Muon);
* :func:`kronecker_factors`: :math:`L \leftarrow \beta L + w\, G G^T`,
  :math:`R \leftarrow \beta R + w\, G^T G` (Shampoo, SOAP);
* :func:`inverse_pth_root`: :math:`(M + \epsilon I)^{-1/p}` through an eigendecomposition
  (Shampoo);
* :func:`eigenbasis` and :func:`refine_eigenbasis`: the eigenvectors of a factor, and one
  power-iteration step followed by QR that tracks them cheaply (SOAP);
* :func:`project` / :func:`project_back`: a matrix in (and back from) the eigenbases
  :math:`Q_L^T G Q_R` (SOAP);
* :func:`block_slices`: the blocks of a large matrix that get their own factors;
* :func:`graft`: a transform that takes its direction from one transform and its
  per-parameter size from another;
* :func:`matrix_rule` and :func:`partition_matrices`: which parameters are matrices for
  these rules (the rest, e.g. biases, norms and embeddings, go to another transform).

**Batched over same-shaped matrices.** A transformer has dozens of matrices in a few
shapes. :func:`batched` groups a list of arrays by shape and dtype, stacks each group,
runs one batched computation per group (one Newton–Schulz loop, one ``eigh``) and
unstacks; the optimizers' states stay per parameter (so that they follow the
parameters' sharding and checkpoints read as the parameters do).

Every function accepts leading batch dimensions ``(..., m, n)``; loops are ``lax``
loops (not unrolled), so compile time and memory do not grow with the step count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gbopt import _dtypes, _tree
from gbopt._base import GradientTransformation, as_transform

NS_COEFFS = (3.4445, -4.7750, 2.0315)
"""Keller Jordan's quintic Newton–Schulz coefficients :math:`(a, b, c)`."""


def _ns_step(x, c):
    a = x @ jnp.swapaxes(x, -1, -2)
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def newton_schulz(
    x: jax.Array,
    coeffs: Sequence[float] | jax.Array = NS_COEFFS,
    steps: int = 5,
    eps: float = 1e-8,
) -> jax.Array:
    r"""Orthogonalises matrices with the quintic Newton–Schulz iteration.

    .. math::
        X_0 = \frac{G}{\lVert G \rVert_F + \epsilon}, \qquad
        A_k = X_k X_k^T, \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k

    run on the wide orientation (a tall :math:`G` is transposed first and the result
    transposed back, since :math:`f(X^T) = f(X)^T`). With Keller Jordan's coefficients
    :math:`(3.4445, -4.7750, 2.0315)` and 5 steps, the singular values of the result lie
    in about :math:`[0.7, 1.2]`: the result is close to :math:`U V^T` for
    :math:`G = U S V^T`, not equal to it (by design; it is what Muon needs).

    Args:
      x: matrices, shape ``(..., m, n)``; leading dimensions are a batch (one loop for all).
      coeffs: ``(a, b, c)``, or one row ``(a, b, c)`` per step, shape ``(steps, 3)``
        (then ``steps`` is ignored).
      steps: the number of iterations (a ``lax.fori_loop``, not unrolled).
      eps: added to the Frobenius norm (so that a zero matrix maps to zero).

    Returns:
      An array shaped like ``x``, in ``x``'s dtype.

    Raises:
      ValueError: for ``x`` of rank < 2, or ``coeffs`` not of shape (3,) or (k, 3).

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/; Bernstein & Newhouse, "Old optimizer,
      new norm: an anthology", arXiv:2409.20325.
    """
    if x.ndim < 2:
        raise ValueError(
            f"newton_schulz: `x` must be a matrix or a batch of matrices (rank >= 2), "
            f"got shape {x.shape}."
        )
    c = jnp.asarray(coeffs, dtype=x.dtype)
    if c.ndim not in (1, 2) or c.shape[-1] != 3:
        raise ValueError(
            f"newton_schulz: `coeffs` must have shape (3,) or (steps, 3), got {c.shape}."
        )
    if x.size == 0:
        return x
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))
    x = x / (norm + jnp.asarray(eps, x.dtype))
    if c.ndim == 1:
        x = lax.fori_loop(0, int(steps), lambda i, x: _ns_step(x, c), x)
    else:
        x, _ = lax.scan(lambda x, ci: (_ns_step(x, ci), None), x, c)
    return jnp.swapaxes(x, -1, -2) if tall else x


def kronecker_factors(
    left: jax.Array, right: jax.Array, g: jax.Array, beta, weight
) -> tuple[jax.Array, jax.Array]:
    r"""Updates the Kronecker factors of a matrix's second moment.

    .. math:: L \leftarrow \beta L + w\, G G^T, \qquad R \leftarrow \beta R + w\, G^T G

    Shampoo's statistics (:math:`\beta = 1, w = 1` in the paper, an EMA with
    :math:`w = 1 - \beta` in Distributed Shampoo and SOAP): :math:`L \otimes R` is a
    Kronecker-factored estimate of the full-matrix second moment of :math:`\mathrm{vec}\,G`.

    Args:
      left: :math:`L`, shape ``(..., m, m)``.
      right: :math:`R`, shape ``(..., n, n)``.
      g: :math:`G`, shape ``(..., m, n)``, in the factors' dtype.
      beta: :math:`\beta`.
      weight: :math:`w`.

    Returns:
      ``(L, R)``.

    References:
      Gupta, Koren & Singer, "Shampoo: Preconditioned stochastic tensor optimization",
      ICML 2018.
    """
    gt = jnp.swapaxes(g, -1, -2)
    return beta * left + weight * (g @ gt), beta * right + weight * (gt @ g)


def _all_finite(x, axes=(-2, -1)):
    return jnp.all(jnp.isfinite(x), axis=axes)


def _one_matrix_at_a_time(fn: Callable[..., Any], *xs: jax.Array) -> Any:
    """Applies a LAPACK-backed ``fn`` to a batch of matrices, one matrix per call on CPU.

    jaxlib's CPU kernels for ``eigh`` and ``qr`` split a batch over XLA's intra-op thread
    pool and block until the parts are done. Two such calls that XLA runs concurrently
    (two shape groups, or the left and the right factor) can hold every thread of the
    pool while they wait, and the step never finishes: on 2 cores, SOAP's step on a
    4-layer model hung on its second call, with both pool threads blocked in batched
    ``qr``. A ``lax.map`` over the batch calls the kernel with one matrix at a time,
    which runs on the calling thread. Other backends keep the batched call.
    """
    batch = xs[0].shape[:-2]
    if not batch or jax.default_backend() != "cpu":
        return fn(*xs)
    flat = tuple(x.reshape(-1, *x.shape[-2:]) for x in xs)
    out = lax.map(lambda args: fn(*args), flat)
    return jax.tree.map(lambda o: o.reshape(*batch, *o.shape[1:]), out)


def inverse_pth_root(
    matrix: jax.Array,
    p: float,
    eps: float,
    *,
    relative: bool = True,
    previous: jax.Array | None = None,
) -> jax.Array:
    r"""The inverse :math:`p`-th root of a symmetric PSD matrix, with a ridge.

    .. math::
        M = Q \Lambda Q^T, \quad
        \epsilon' = \epsilon \max(\lambda_{\max}, 10^{-6}) \text{ (relative) or } \epsilon,
        \quad (M + \epsilon' I)^{-1/p} = Q\, \mathrm{diag}\big((\max(\lambda_i, 0) +
        \epsilon')^{-1/p}\big)\, Q^T

    Distributed Shampoo computes the same root with a coupled Newton iteration (and
    estimates :math:`\lambda_{\max}` with a power iteration); an eigendecomposition gives
    the exact root, batched over a stack of matrices with one ``eigh``.

    Args:
      matrix: symmetric matrices, shape ``(..., d, d)``.
      p: the root's order (Shampoo: twice the number of factors, 4 for a matrix).
      eps: the ridge :math:`\epsilon`.
      relative: scale the ridge by the largest eigenvalue (as Distributed Shampoo).
      previous: the roots to keep where this one fails (a non-finite matrix or
        decomposition); without it, identity matrices are kept there.

    Returns:
      The roots, shape ``(..., d, d)``; never non-finite where ``matrix`` is not.
    """
    ok_in = _all_finite(matrix)
    safe = jnp.where(ok_in[..., None, None], matrix, jnp.zeros_like(matrix))
    lam, q = _one_matrix_at_a_time(jnp.linalg.eigh, safe)
    lam_max = jnp.max(lam, axis=-1, keepdims=True)
    ridge = eps * jnp.maximum(lam_max, 1e-6) if relative else jnp.asarray(eps, lam.dtype)
    d = (jnp.maximum(lam, 0.0) + ridge) ** (-1.0 / p)
    root = (q * d[..., None, :].astype(q.dtype)) @ jnp.swapaxes(q, -1, -2)
    ok = ok_in & _all_finite(root)
    fallback = (
        previous
        if previous is not None
        else jnp.broadcast_to(jnp.eye(matrix.shape[-1], dtype=matrix.dtype), matrix.shape)
    )
    return jnp.where(ok[..., None, None], root, fallback)


def eigenbasis(matrix: jax.Array, previous: jax.Array | None = None) -> jax.Array:
    r"""The eigenvectors of symmetric matrices, by decreasing eigenvalue.

    .. math:: M = Q \Lambda Q^T, \quad \lambda_1 \ge \lambda_2 \ge \dots

    Where a matrix or its decomposition is not finite, ``previous`` (or the identity) is
    returned instead: the basis is then stale, never NaN.

    Args:
      matrix: shape ``(..., d, d)``.
      previous: the bases to keep where the decomposition fails.

    Returns:
      :math:`Q`, shape ``(..., d, d)``, orthogonal columns.
    """
    ok_in = _all_finite(matrix)
    safe = jnp.where(ok_in[..., None, None], matrix, jnp.zeros_like(matrix))
    _, q = _one_matrix_at_a_time(jnp.linalg.eigh, safe)
    q = q[..., ::-1]
    ok = ok_in & _all_finite(q)
    fallback = (
        previous
        if previous is not None
        else jnp.broadcast_to(jnp.eye(matrix.shape[-1], dtype=matrix.dtype), matrix.shape)
    )
    return jnp.where(ok[..., None, None], q, fallback)


def refine_eigenbasis(matrix: jax.Array, basis: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""One power-iteration step and a QR decomposition: tracks a drifting eigenbasis.

    .. math::
        \hat\lambda = \mathrm{diag}(Q^T M Q), \quad
        \pi = \mathrm{argsort}(-\hat\lambda), \quad
        Q' R' = M Q_{:, \pi}

    SOAP's cheap update of the eigenbasis (instead of a full ``eigh``): the columns are
    first sorted by their estimated eigenvalue, and the caller permutes the second
    moment kept in the basis by the same :math:`\pi`.

    Args:
      matrix: :math:`M`, shape ``(..., d, d)``.
      basis: the current :math:`Q`, same shape.

    Returns:
      ``(Q', perm)``: the new basis, and the permutation :math:`\pi` (shape ``(..., d)``).
      Where the result is not finite, the old basis and the identity permutation are
      returned.

    References:
      Vyas et al., "SOAP: Improving and stabilizing Shampoo using Adam", ICLR 2025,
      arXiv:2409.11321.
    """
    est = jnp.einsum("...ij,...ik,...kj->...j", basis, matrix, basis)
    perm = jnp.argsort(-est, axis=-1, stable=True)
    sorted_basis = jnp.take_along_axis(basis, perm[..., None, :], axis=-1)
    q, _ = _one_matrix_at_a_time(jnp.linalg.qr, matrix @ sorted_basis)
    ok = _all_finite(q) & _all_finite(matrix)
    identity = jnp.broadcast_to(jnp.arange(matrix.shape[-1]), perm.shape)
    return (
        jnp.where(ok[..., None, None], q, basis),
        jnp.where(ok[..., None], perm, identity),
    )


def project(g: jax.Array, q_left: jax.Array | None, q_right: jax.Array | None) -> jax.Array:
    r"""A matrix in the eigenbases: :math:`Q_L^T G Q_R` (a ``None`` basis is the identity).

    .. math:: G' = Q_L^T G Q_R

    References:
      Vyas et al., "SOAP", arXiv:2409.11321 (Algorithm 1, line "project").
    """
    if q_left is not None:
        g = jnp.swapaxes(q_left, -1, -2) @ g
    if q_right is not None:
        g = g @ q_right
    return g


def project_back(g: jax.Array, q_left: jax.Array | None, q_right: jax.Array | None) -> jax.Array:
    r"""Back from the eigenbases: :math:`Q_L G Q_R^T` (a ``None`` basis is the identity).

    .. math:: G = Q_L G' Q_R^T

    References:
      Vyas et al., "SOAP", arXiv:2409.11321 (Algorithm 1, line "project back").
    """
    if q_left is not None:
        g = q_left @ g
    if q_right is not None:
        g = g @ jnp.swapaxes(q_right, -1, -2)
    return g


def block_slices(shape: tuple[int, int], block_size: int) -> list[tuple[slice, slice]]:
    r"""The blocks of a matrix that get their own factors, in row-major order.

    A dimension :math:`d` larger than ``block_size`` :math:`b` is cut at
    :math:`b, 2b, \dots` (the last block is smaller); Distributed Shampoo's
    ``BlockPartitioner`` cuts the same way. The factors of a block are :math:`b \times b`
    at most, so their cost, :math:`O(b^3)`, no longer grows with the layer's width.

    Args:
      shape: ``(m, n)``.
      block_size: :math:`b`; 0 or less means no blocking.

    Returns:
      A list of ``(rows, cols)`` slices.
    """

    def cuts(d):
        if 0 < block_size < d:
            edges = list(range(0, d, block_size)) + [d]
            return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return [slice(0, d)]

    return [(r, c) for r in cuts(shape[0]) for c in cuts(shape[1])]


def split_blocks(x: jax.Array, slices: list[tuple[slice, slice]]) -> list[jax.Array]:
    """The blocks of ``x`` (see :func:`block_slices`)."""
    if len(slices) == 1:
        return [x]
    return [x[r, c] for r, c in slices]


def merge_blocks(blocks: list[jax.Array], slices: list[tuple[slice, slice]]) -> jax.Array:
    """Reassembles the blocks of :func:`split_blocks`."""
    if len(slices) == 1:
        return blocks[0]
    rows: list[list[jax.Array]] = []
    last = None
    for block, (r, _) in zip(blocks, slices, strict=True):
        if r != last:
            rows.append([])
            last = r
        rows[-1].append(block)
    return jnp.concatenate([jnp.concatenate(row, axis=1) for row in rows], axis=0)


def batched(fn: Callable[..., Any], *columns: Sequence[jax.Array]) -> list[Any]:
    """Applies ``fn`` once per group of same-shaped, same-dtype arrays, stacked.

    ``columns`` are equally long lists; item ``i`` of every column belongs to the same
    job, and jobs are grouped by the shapes and dtypes of their items. ``fn`` receives one
    stacked array per column (a leading axis over the group) and returns an array or a
    tuple of arrays with that leading axis; the result is unstacked per job.

    Returns:
      One result per job, in the order of the columns.
    """
    n = len(columns[0])
    groups: dict[Any, list[int]] = {}
    for i in range(n):
        key = tuple((None if c[i] is None else (c[i].shape, str(c[i].dtype))) for c in columns)
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * n
    for idx in groups.values():
        stacked = [
            None if columns[j][idx[0]] is None else jnp.stack([columns[j][i] for i in idx])
            for j in range(len(columns))
        ]
        out = fn(*stacked)
        for k, i in enumerate(idx):
            results[i] = jax.tree.map(lambda a, k=k: a[k], out)
    return results


# ----------------------------------------------------------------------------------------
# The partition rule: which parameters are matrices for these optimizers.

_NOT_MATRIX = re.compile(r"embed|wte|wpe|lm_head|^head$|unembed|^logits?$|norm|^ln|bias")


def matrix_rule(path: tuple, leaf: Any) -> bool:
    """The default rule: a 2-D parameter that is not an embedding, an output head or a norm.

    A parameter is a *matrix* when it has exactly two dimensions and no key on its path
    names an embedding or an output layer (a key containing ``embed``, or equal to
    ``wte``, ``wpe``, ``head``, ``lm_head``, ``unembed``, ``logits``), a norm (containing
    ``norm`` or starting with ``ln``) or a bias. Muon's authors leave the embeddings and
    the output head to AdamW; Shampoo and SOAP can take them, through an explicit rule.

    Args:
      path: the tuple of plain keys to the parameter (see :func:`gbopt.label_by_path`).
      leaf: the parameter (only its ``ndim`` is read).

    Returns:
      Whether the parameter goes to the matrix rule.
    """
    if getattr(leaf, "ndim", None) != 2:
        return False
    return not any(_NOT_MATRIX.search(str(k).lower()) for k in path)


def partition_matrices(
    matrix_tx: Any,
    other_tx: Any,
    rule: Callable[[tuple, Any], bool] | Any | None = None,
) -> GradientTransformation:
    r"""Sends the matrices to one transform and every other parameter to another.

    .. math:: u_i = \begin{cases} f_{\text{matrix}}(g)_i & \text{rule}(i) \\
                                  f_{\text{other}}(g)_i & \text{otherwise} \end{cases}

    Built on :func:`gbopt.multi_transform` with labels ``"matrix"`` and ``"other"``.

    Args:
      matrix_tx: the transform of the matrices.
      other_tx: the transform of the rest (biases, norms, embeddings, the head).
      rule: ``rule(path, leaf) -> bool`` (default :func:`matrix_rule`), or a pytree of
        booleans shaped like the parameters, or a function ``params -> booleans``.

    Returns:
      A :func:`gbopt.multi_transform` transform.
    """
    from gbopt._partition import label_by_path, multi_transform

    if rule is None:
        rule = matrix_rule
    if callable(rule) and _takes_two(rule):
        labels = label_by_path(lambda p, x: "matrix" if rule(p, x) else "other")
    elif callable(rule):

        def labels(params):
            return jax.tree.map(lambda b: "matrix" if b else "other", rule(params))

    else:
        labels = jax.tree.map(lambda b: "matrix" if b else "other", rule)
    return multi_transform(
        {"matrix": as_transform(matrix_tx), "other": as_transform(other_tx)}, labels
    )


def _takes_two(fn) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in positional)


def check_matrices(updates: Any, who: str) -> None:
    """Raises a ``ValueError`` naming the path of any leaf that is not 2-D."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(updates):
        if leaf.ndim != 2:
            raise ValueError(
                f"{who}: the parameter at `{_tree.path_str(path)}` has shape {leaf.shape}, "
                f"but this rule needs matrices (2-D). Send it to the other transform with "
                f"the `matrix_rule` argument (a function (path, leaf) -> bool), or reshape "
                f"it to 2-D."
            )


# ----------------------------------------------------------------------------------------
# Grafting.


class GraftState(NamedTuple):
    """State of :func:`graft`.

    Attributes:
      magnitude: the state of the transform that sets the size.
      direction: the state of the transform that sets the direction.
    """

    magnitude: Any
    direction: Any


def graft_norms(direction: jax.Array, magnitude: jax.Array, eps: float = 1e-16) -> jax.Array:
    r"""Rescales ``direction`` to the Frobenius norm of ``magnitude``.

    .. math:: u = d\, \frac{\lVert m \rVert_F}{\lVert d \rVert_F + \epsilon}
    """
    ratio = jnp.linalg.norm(magnitude.ravel()) / (jnp.linalg.norm(direction.ravel()) + eps)
    wide = _dtypes.promote(direction.dtype, ratio.dtype)  # as standard promotion, also under strict
    return direction.astype(wide) * ratio.astype(wide)


def graft(magnitude: Any, direction: Any, *, eps: float = 1e-16) -> GradientTransformation:
    r"""Layer-wise grafting: the direction of one transform, the step size of another.

    .. math::
        u_i = d_i \frac{\lVert m_i \rVert_F}{\lVert d_i \rVert_F + \epsilon}, \quad
        d = f_{\text{direction}}(g), \; m = f_{\text{magnitude}}(g)

    per parameter :math:`i`. Shampoo grafts its step size from a diagonal method
    (SGD, AdaGrad, RMSProp) so that it can replace it without retuning the learning rate.

    Args:
      magnitude: the transform whose per-parameter norm is kept (e.g. ``gbopt.rmsprop``
        without its learning rate).
      direction: the transform whose direction is kept (e.g. a preconditioner).
      eps: :math:`\epsilon`, guards a zero direction.

    Returns:
      A transform with state :class:`GraftState`.

    References:
      Agarwal, Anil, Hazan, Koren & Zhang, "Disentangling adaptive gradient methods from
      learning rates", arXiv:2002.11803.
    """
    magnitude = as_transform(magnitude, argument="magnitude")
    direction = as_transform(direction, argument="direction")

    def init_fn(params):
        return GraftState(magnitude.init(params), direction.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        m, ms = magnitude.update(updates, state.magnitude, params, **extra_args)
        d, ds = direction.update(updates, state.direction, params, **extra_args)
        out = jax.tree.map(lambda d, m: graft_norms(d, m, eps), d, m)
        return out, GraftState(ms, ds)

    return GradientTransformation(init_fn, update_fn)


def np_shape(x) -> tuple[int, ...]:
    """The static shape of an array or a ShapeDtypeStruct."""
    return tuple(int(s) for s in np.shape(x))
