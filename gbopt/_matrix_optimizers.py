r"""Matrix-aware optimizers: Muon, Shampoo and SOAP, built from :mod:`gbopt._matrix`.

Each optimizer sends the weight matrices (see :func:`gbopt._matrix.matrix_rule`) to its
matrix rule and every other parameter (biases, norms, embeddings, the output head) to
AdamW, through :func:`gbopt._matrix.partition_matrices`. Inside a matrix rule, matrices
of the same shape are stacked so that one batched Newton–Schulz loop or one batched
``eigh`` serves each shape (:func:`gbopt._matrix.batched`); the state stays one entry
per parameter.

Notation: :math:`G \in \mathbb{R}^{m \times n}` is a matrix's gradient, in JAX's
``x @ W`` convention (:math:`m` = fan-in, :math:`n` = fan-out); PyTorch's ``nn.Linear``
stores the transpose.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gbopt import _dtypes, _matrix, _numerics, _placement, _tree, _tree_checks, _validate
from gbopt._base import (
    GradientTransformation,
    ScalarOrSchedule,
    _owning_step,
    expect_state,
    named,
    with_info,
)
from gbopt._combine import chain, divide, with_step_count
from gbopt._maps import add, bias_correction, scale_by_learning_rate, sqrt
from gbopt._regularize import add_decayed_weights
from gbopt._statistics import accumulate_square

# ----------------------------------------------------------------------------------------
# Pieces of Muon.


class NesterovEmaState(NamedTuple):
    """State of :func:`nesterov_ema`.

    The step comes from an enclosing :func:`gbopt.with_step_count` (or a
    :class:`gbopt.StepCountState` around this state when used alone).

    Attributes:
      mu: the moving average, one array per parameter, stored in the parameter's dtype
        (bfloat16 included: a first moment follows the parameters) and updated in at
        least float32.
    """

    mu: Any


def _follows_params(dtype):
    """A first moment's storage: the parameters' own dtype (see gbopt._dtypes.storage)."""
    return _dtypes.storage(dtype, follows=True)[0]


def nesterov_ema(
    decay: float | jax.Array, *, nesterov: bool = True, debias: bool = True
) -> GradientTransformation:
    r"""A moving average of the updates, with a Nesterov look-ahead and a bias correction.

    .. math::
        \mu_t = \beta \mu_{t-1} + (1 - \beta) g_t, \qquad
        \text{out} = \begin{cases}
          \beta \dfrac{\mu_t}{1 - \beta^{t+1}} + (1 - \beta) \dfrac{g_t}{1 - \beta^t}
            & \text{nesterov, debias (optax)} \\
          \beta \mu_t + (1 - \beta) g_t & \text{nesterov, no debias (Keller Jordan's Muon)} \\
          \mu_t / (1 - \beta^t) \text{ or } \mu_t & \text{otherwise}
        \end{cases}

    The debiased Nesterov form is optax's ``scale_by_adam(nesterov=True)`` first moment
    and ``optax.contrib.scale_by_muon``'s momentum; without debiasing it is PyTorch
    Muon's ``grad.lerp_(momentum, beta)``.

    Args:
      decay: :math:`\beta` in [0, 1).
      nesterov: use the look-ahead form.
      debias: divide by :math:`1 - \beta^t` (and :math:`1 - \beta^{t+1}`).

    Returns:
      A transform with state :class:`NesterovEmaState` (inside a
      :class:`gbopt.StepCountState` when used alone).
    """
    _validate.decay_rate("decay", decay)
    _validate.flag("nesterov", nesterov)
    _validate.flag("debias", debias)

    def init_inner(params):
        return NesterovEmaState(_placement.zeros_like(params, _follows_params))

    def update_inner(updates, state, params, count, **extra_args):
        del params, extra_args
        expect_state(state, NesterovEmaState, "nesterov_ema")
        _tree_checks.check_matches(updates, state.mu, what="updates", reference_name="state's `mu`")

        def leaf(u, stored):
            m = _dtypes.cast(stored, _dtypes.state_dtype(stored.dtype))  # at least float32
            b = _dtypes.scalar(decay, m.dtype)
            g = _dtypes.cast(u, m.dtype)
            m = b * m + (1 - b) * g
            if nesterov and debias:
                nxt = _numerics.safe_increment(count)
                out = b * (m / _numerics.one_minus_power(decay, nxt, m.dtype)) + (1 - b) * (
                    g / _numerics.one_minus_power(decay, count, m.dtype)
                )
            elif nesterov:
                out = b * m + (1 - b) * g
            elif debias:
                out = m / _numerics.one_minus_power(decay, count, m.dtype)
            else:
                out = m
            return _dtypes.cast(out, u.dtype), _dtypes.cast(m, stored.dtype)

        out, mu = _tree.map_leaves(leaf, 2, updates, state.mu)
        return out, NesterovEmaState(mu)

    init_fn, update_fn = _owning_step(init_inner, update_inner, "nesterov_ema")

    if nesterov and debias:
        out = r"\rho \frac{\mu}{1 - \rho^{t+1}} + (1 - \rho) \frac{u}{1 - \rho^t}"
    elif nesterov:
        out = r"\rho \mu + (1 - \rho) u"
    elif debias:
        out = r"\frac{\mu}{1 - \rho^t}"
    else:
        out = r"\mu"
    return with_info(
        GradientTransformation(init_fn, update_fn),
        "nesterov_ema",
        "statistic",
        hyperparams={"decay": decay, "nesterov": nesterov, "debias": debias},
        math=r"\mu \leftarrow \rho \mu + (1 - \rho) u;\quad u \leftarrow " + out,
        state=("mu",),
    )


def _compute_dtype(dtype):
    return _dtypes.promote(dtype, jnp.float32)  # also under strict dtype promotion


def orthogonalize(
    ns_coeffs: Sequence[float] | Sequence[Sequence[float]] = _matrix.NS_COEFFS,
    ns_steps: int = 5,
    eps: float = 1e-8,
) -> GradientTransformation:
    r"""Replaces each matrix update by its Newton–Schulz orthogonalisation (stateless).

    .. math:: u \leftarrow \mathrm{NS}_k(u) \approx U V^T \quad (u = U S V^T)

    Matrices of one shape and dtype are stacked and orthogonalised by one batched loop
    (:func:`gbopt._matrix.newton_schulz`), in at least float32; the result is cast back.

    Args:
      ns_coeffs: ``(a, b, c)`` or one triple per step.
      ns_steps: the number of iterations.
      eps: added to the Frobenius norm before dividing.

    Returns:
      A stateless transform.

    Raises:
      ValueError: at ``update``, for a leaf that is not 2-D (naming its path).
    """
    _validate.whole_number("ns_steps", ns_steps, 1)
    _validate.non_negative("eps", eps)

    def init_fn(params):
        del params
        return ()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _matrix.check_matrices(updates, "orthogonalize")
        leaves, treedef = jax.tree.flatten(updates)
        work = [x.astype(_compute_dtype(x.dtype)) for x in leaves]
        outs = _matrix.batched(lambda x: _matrix.newton_schulz(x, ns_coeffs, ns_steps, eps), work)
        return treedef.unflatten(
            [o.astype(x.dtype) for o, x in zip(outs, leaves, strict=True)]
        ), state

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "orthogonalize",
        "map",
        hyperparams={"ns_steps": ns_steps, "eps": eps},
        math=rf"\operatorname{{NS}}_{{{ns_steps}}}\big(u / (\lVert u \rVert + \delta)\big)",
    )


def scale_by_shape(consistent_rms: float | None = None) -> GradientTransformation:
    r"""Scales each matrix update by a factor of its shape (stateless).

    .. math::
        u \leftarrow \sqrt{\max(1, n / m)}\; u \quad\text{or, with consistent RMS } r,\quad
        u \leftarrow r \sqrt{\max(m, n)}\; u

    for a matrix of shape :math:`(m, n)` = (fan-in, fan-out). The first is Keller
    Jordan's (and optax's default); the second (Liu et al., 2025) gives updates the RMS
    :math:`r` of AdamW's (0.2 is suggested), whatever the shape.

    Args:
      consistent_rms: :math:`r`, or ``None`` for the width scaling.

    Returns:
      A stateless transform.
    """
    if consistent_rms is not None:
        _validate.positive("consistent_rms", consistent_rms)

    def init_fn(params):
        del params
        return ()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _matrix.check_matrices(updates, "scale_by_shape")

        def leaf(u):
            m, n = u.shape
            if consistent_rms is None:
                factor = max(1.0, n / m) ** 0.5 if m else 1.0
            else:
                factor = consistent_rms * max(m, n) ** 0.5
            wide = _compute_dtype(u.dtype)
            return (u.astype(wide) * jnp.asarray(factor, wide)).astype(u.dtype)

        return jax.tree.map(leaf, updates), state

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "scale_by_shape",
        "map",
        hyperparams={"consistent_rms": consistent_rms},
        math=r"\sqrt{\max(1, n / m)}\, u" if consistent_rms is None else r"r \sqrt{\max(m, n)}\, u",
    )


def _adamw(learning_rate, b1, b2, eps, weight_decay, *, nesterov=False, mask=None):
    """AdamW (optax's order: decay after the preconditioner, before the learning rate)."""
    return with_step_count(
        lambda t: chain(
            divide(
                nesterov_ema(b1, nesterov=nesterov),
                chain(accumulate_square(b2), bias_correction(b2, step=t), sqrt(), add(eps)),
            ),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate, step=t),
        )
    )


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Sequence[float] | Sequence[Sequence[float]] = _matrix.NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    weight_decay_mask: Any = None,
    *,
    nesterov: bool = True,
    debias: bool = True,
    consistent_rms: float | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    matrix_rule: Callable[[tuple, Any], bool] | Any | None = None,
) -> GradientTransformation:
    r"""Muon: momentum orthogonalised by Newton–Schulz, for the weight matrices.

    For each matrix :math:`w \in \mathbb{R}^{m \times n}` with gradient :math:`G`, and
    for every other parameter :math:`w` with gradient :math:`g`:

    .. math::
        \mu_t = \beta \mu_{t-1} + (1 - \beta) G_t, \quad
        M_t = \beta \frac{\mu_t}{1 - \beta^{t+1}} + (1 - \beta) \frac{G_t}{1 - \beta^t},
        \\
        O_t = \mathrm{NS}_5\big(M_t / (\lVert M_t \rVert_F + \epsilon)\big) \approx U V^T,
        \quad
        w \leftarrow w - \alpha \big(\sqrt{\max(1, n/m)}\, O_t + \lambda w\big),
        \\
        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \\
        w \leftarrow w - \alpha \left(\frac{\beta_1 m_t / (1 - \beta_1^{t+1})
          + (1 - \beta_1) g_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
          + \lambda_a w\right)

    The matrices take :func:`nesterov_ema`, :func:`orthogonalize`,
    :func:`scale_by_shape`, :func:`gbopt.add_decayed_weights` and
    :func:`gbopt.scale_by_learning_rate`; every other parameter takes AdamW with Nesterov
    momentum (optax's ``adamw(nesterov=True)``).
    With ``debias=False`` the momentum is Keller Jordan's PyTorch Muon's
    (:math:`M_t = \beta \mu_t + (1-\beta) G_t`, no bias correction; it also uses
    ``eps=1e-7``).

    Same-shaped matrices are orthogonalised together: one batched Newton–Schulz loop
    (a ``lax.fori_loop``) per shape.

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule.
      ns_coeffs: the Newton–Schulz coefficients ``(a, b, c)``, or one triple per step.
      ns_steps: the number of Newton–Schulz iterations.
      beta: :math:`\beta`, the momentum.
      eps: :math:`\epsilon`, added to the Frobenius norm before Newton–Schulz; also
        AdamW's.
      weight_decay: :math:`\lambda` for the matrices (decoupled, times :math:`\alpha`).
      weight_decay_mask: a mask (or function) restricting it, as
        :func:`gbopt.add_decayed_weights`.
      nesterov: use the Nesterov form of the momentum (both rules).
      debias: bias-correct the momentum (optax) or not (PyTorch Muon).
      consistent_rms: see :func:`scale_by_shape`.
      adam_b1: :math:`\beta_1`, AdamW's first decay.
      adam_b2: :math:`\beta_2`, AdamW's second decay.
      adam_weight_decay: :math:`\lambda_a`, AdamW's decoupled weight decay.
      adam_learning_rate: AdamW's learning rate (default: ``learning_rate``).
      matrix_rule: which parameters are matrices: ``rule(path, leaf) -> bool``, a pytree
        of booleans, or ``params -> booleans``; default :func:`gbopt._matrix.matrix_rule`
        (2-D, and not an embedding, output head or norm). ``lambda path, x: x.ndim == 2``
        gives optax's rule.

    Returns:
      A :func:`gbopt.multi_transform` transform (labels ``"matrix"`` and ``"other"``).

    Raises:
      ValueError: for invalid hyperparameters; at ``update``, when the rule sends a leaf
        that is not 2-D to the matrix rule (naming its path).

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
      https://kellerjordan.github.io/posts/muon/ (reference code:
      github.com/KellerJordan/Muon); Liu et al., "Muon is scalable for LLM training",
      arXiv:2502.16982; optax ``contrib.muon``.

    Note:
      optax 0.2.8's ``contrib.muon`` unrolls its Newton–Schulz loop and runs one loop
      per matrix; gbopt runs one rolled loop per shape (the same arithmetic). PyTorch
      Muon runs Newton–Schulz in bfloat16 and takes ``nn.Linear`` weights
      (:math:`n \times m`); the result is the transpose of the same update.
    """
    _validate.learning_rate(learning_rate)
    _validate.non_negative("weight_decay", weight_decay)
    matrix_tx = with_step_count(
        chain(
            nesterov_ema(beta, nesterov=nesterov, debias=debias),
            orthogonalize(ns_coeffs, ns_steps, eps),
            scale_by_shape(consistent_rms),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(learning_rate),
        )
    )
    other_tx = _adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        adam_b1,
        adam_b2,
        eps,
        adam_weight_decay,
        nesterov=nesterov,
    )
    return named(
        "muon",
        _matrix.partition_matrices(matrix_tx, other_tx, matrix_rule),
        learning_rate=learning_rate,
        ns_steps=ns_steps,
        beta=beta,
        eps=eps,
        weight_decay=weight_decay,
        nesterov=nesterov,
        debias=debias,
        consistent_rms=consistent_rms,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_weight_decay=adam_weight_decay,
        adam_learning_rate=adam_learning_rate,
    )


# ----------------------------------------------------------------------------------------
# Shampoo.

GRAFTS = ("sgd", "adagrad", "rmsprop", "adam")


class ShampooState(NamedTuple):
    """State of :func:`scale_by_shampoo`; per parameter, one entry per block where noted.

    The step comes from an enclosing :func:`gbopt.with_step_count` (or a
    :class:`gbopt.StepCountState` around this state when used alone).

    Attributes:
      left: the left factors :math:`L` (a tuple per parameter, one per block).
      right: the right factors :math:`R` (same).
      left_root: :math:`L^{-1/p}` (same).
      right_root: :math:`R^{-1/p}` (same).
      graft: the grafting rule's accumulator (like the parameter; ``None`` for SGD).
      momentum: the momentum of the Shampoo direction, stored in the parameter's dtype
        (bfloat16 included: a first moment follows the parameters).
      graft_momentum: the momentum of the grafting direction, stored likewise.
    """

    left: Any
    right: Any
    left_root: Any
    right_root: Any
    graft: Any
    momentum: Any
    graft_momentum: Any


def scale_by_shampoo(
    block_size: int = 128,
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = 1,
    *,
    graft_type: str = "rmsprop",
    nesterov: bool = True,
    exponent_override: int = 0,
    moving_average_for_momentum: bool = False,
    skip_preconditioning_dim_size_gt: int = 4096,
    relative_matrix_epsilon: bool = True,
) -> GradientTransformation:
    r"""Shampoo's direction for matrices, grafted onto a diagonal method, with momentum.

    Per matrix (per block of at most ``block_size`` rows and columns), at step
    :math:`t = 0, 1, \dots`:

    .. math::
        L \leftarrow \beta_2 L + (1 - \beta_2) G G^T, \quad
        R \leftarrow \beta_2 R + (1 - \beta_2) G^T G \quad (L_0 = R_0 = \epsilon I),
        \\
        P_L, P_R \leftarrow (L + \epsilon' I)^{-1/p}, (R + \epsilon' I)^{-1/p}
        \quad\text{when } t \bmod k = 0 \;(p = 4),
        \\
        D = P_L G P_R, \quad
        g_{\text{graft}} = \frac{G}{\sqrt{v} + \epsilon_d}, \; v \leftarrow \beta_2 v +
        (1 - \beta_2) G^2 \text{ (RMSProp grafting)},
        \\
        s = D \frac{\lVert g_{\text{graft}} \rVert_F}{\lVert D \rVert_F + 10^{-16}}
            + \lambda W, \quad
        \hat s = g_{\text{graft}} + \lambda W,
        \\
        m \leftarrow \beta_1 m + s, \quad \hat m \leftarrow \beta_1 \hat m + \hat s, \quad
        \text{out} = \begin{cases} s + \beta_1 m & t \ge t_0 \\
                                   \hat s + \beta_1 \hat m & t < t_0 \end{cases}
        \text{ (Nesterov)}

    as Google Research's Distributed Shampoo (``distributed_shampoo.py``) with
    ``best_effort_shape_interpretation=False``, ``decoupled_learning_rate=True``; the
    learning rate comes after (:func:`gbopt.scale_by_learning_rate`). The roots are
    recomputed under ``lax.cond`` every ``preconditioning_compute_steps`` steps, all
    factors of one size at once (one batched ``eigh``), and where a factor or its
    decomposition is not finite the previous root is kept (the reference keeps it when
    its iteration's error exceeds ``inverse_failure_threshold``).

    Args:
      block_size: blocks of at most this size get their own factors (0: no blocking).
      beta1: momentum :math:`\beta_1`.
      beta2: :math:`\beta_2` of the factors and of RMSProp grafting (1: sums).
      diagonal_epsilon: :math:`\epsilon_d` of the grafting rule.
      matrix_epsilon: :math:`\epsilon`: the initial factors and the ridge
        (:math:`\epsilon' = \epsilon \max(\lambda_{\max}, 10^{-6})` when relative).
      weight_decay: :math:`\lambda`, coupled (added before the momentum).
      start_preconditioning_step: :math:`t_0`; before it, the grafting direction is used.
      preconditioning_compute_steps: :math:`k`.
      graft_type: ``"sgd"``, ``"adagrad"``, ``"rmsprop"`` or ``"adam"`` (RMSProp with
        Adam's bias correction: :math:`v / (1 - \beta_2^{t+1})` in place of :math:`v`,
        or :math:`v / (t+1)` when :math:`\beta_2 = 1`).
      nesterov: Nesterov momentum.
      exponent_override: :math:`p` if > 0 (default :math:`p = 4`).
      moving_average_for_momentum: :math:`m \leftarrow \beta_1 m + (1 - \beta_1) s`.
      skip_preconditioning_dim_size_gt: matrices with a larger dimension take the
        grafting direction only.
      relative_matrix_epsilon: scale the ridge by the largest eigenvalue.

    Returns:
      A transform with state :class:`ShampooState`.

    References:
      Gupta, Koren & Singer, "Shampoo", ICML 2018; Anil et al., "Scalable second order
      optimization for deep learning", arXiv:2002.09018.

    Note:
      The reference estimates :math:`\lambda_{\max}` with a power iteration and computes
      the root with a coupled Newton iteration that stops at an error of 1e-6; gbopt
      takes both from an eigendecomposition (exact). The reference's default
      ``best_effort_shape_interpretation=True`` merges the dimensions of a small matrix
      into one vector (one :math:`mn \times mn` factor); gbopt never does. The
      reference's default ``graft_type`` is SGD; gbopt's is RMSProp. ``"adam"`` is not
      in the reference (Meta's PyTorch Shampoo has it as ``AdamGraftingConfig``).

    Warning:
      RMSProp grafting has no bias correction: its step starts
      :math:`1/\sqrt{1 - \beta_2} \approx 32` times Adam's (:math:`\beta_2 = 0.999`)
      and is still about 2 times Adam's after 300 steps, and the summed momentum
      (``moving_average_for_momentum=False``) multiplies the step by about
      :math:`1/(1 - \beta_1) = 10`. The initial factors :math:`\epsilon I` also outweigh
      :math:`(1 - \beta_2) \sum G G^T` while the gradients are small (entries around
      1e-4, a width-64 language model: a root's condition number is 1.24 after 100
      steps, so the preconditioner is nearly a multiple of the identity).
      For training from scratch, ``graft_type="adam"`` with
      ``moving_average_for_momentum=True`` (and an Adam-like learning rate) is the
      setting that worked (see docs/matrix.md).
    """
    if graft_type not in GRAFTS:
        raise ValueError(
            f"scale_by_shampoo: `graft_type` must be one of {GRAFTS}, got {graft_type!r}."
        )
    _validate.decay_rate("beta1", beta1)
    if not 0.0 <= beta2 <= 1.0:
        raise ValueError(f"scale_by_shampoo: `beta2` must be in [0, 1], got {beta2!r}.")
    _validate.non_negative("matrix_epsilon", matrix_epsilon)
    _validate.non_negative("diagonal_epsilon", diagonal_epsilon)
    _validate.non_negative("weight_decay", weight_decay)
    _validate.whole_number("preconditioning_compute_steps", preconditioning_compute_steps, 1)
    _validate.whole_number("start_preconditioning_step", start_preconditioning_step, 0)
    _validate.whole_number("block_size", block_size, 0)
    p = exponent_override if exponent_override > 0 else 4
    w2 = 1.0 if beta2 == 1.0 else 1.0 - beta2
    w_m = (1.0 - beta1) if moving_average_for_momentum else 1.0

    def plan(x):
        if any(d > skip_preconditioning_dim_size_gt for d in x.shape) or x.size == 0:
            return []
        return _matrix.block_slices(x.shape, block_size)

    def init_inner(params):
        _matrix.check_matrices(params, "scale_by_shampoo")
        leaves, treedef = jax.tree.flatten(params)

        def factors(x, axis):
            dt = _dtypes.state_dtype(x.dtype)
            return tuple(
                matrix_epsilon * jnp.eye(x[r, c].shape[axis], dtype=dt) for r, c in plan(x)
            )

        def roots(x, axis):
            dt = _dtypes.state_dtype(x.dtype)
            return tuple(jnp.eye(x[r, c].shape[axis], dtype=dt) for r, c in plan(x))

        def tree(fn):
            return treedef.unflatten([fn(x) for x in leaves])

        return ShampooState(
            left=tree(lambda x: factors(x, 0)),
            right=tree(lambda x: factors(x, 1)),
            left_root=tree(lambda x: roots(x, 0)),
            right_root=tree(lambda x: roots(x, 1)),
            graft=(tree(lambda x: None) if graft_type == "sgd" else _placement.zeros_like(params)),
            momentum=_placement.zeros_like(params, _follows_params),
            graft_momentum=_placement.zeros_like(params, _follows_params),
        )

    def update_inner(updates, state, params, count, **extra_args):
        del extra_args
        expect_state(state, ShampooState, "scale_by_shampoo")
        _matrix.check_matrices(updates, "scale_by_shampoo")
        if weight_decay and params is None:
            raise ValueError("scale_by_shampoo: `weight_decay` > 0 needs `params` at update.")
        leaves, treedef = jax.tree.flatten(updates)
        step = count - 1  # the updates before this one
        flat = {
            name: treedef.flatten_up_to(getattr(state, name))
            for name in ("left", "right", "left_root", "right_root", "graft")
        }
        mom = treedef.flatten_up_to(state.momentum)
        gmom = treedef.flatten_up_to(state.graft_momentum)
        ps = treedef.flatten_up_to(params) if params is not None else [None] * len(leaves)
        # Computed in at least float32; the momenta are stored in the parameters' dtype.
        grads = [u.astype(_dtypes.state_dtype(m.dtype)) for u, m in zip(leaves, mom, strict=True)]
        plans = [plan(g) for g in grads]
        blocks = [_matrix.split_blocks(g, pl) for g, pl in zip(grads, plans, strict=True)]

        # Statistics: one batched update per block shape.
        jobs = [(i, b) for i, pl in enumerate(plans) for b in range(len(pl))]
        stats = _matrix.batched(
            lambda lf, rf, g: _matrix.kronecker_factors(lf, rf, g, beta2, w2),
            [flat["left"][i][b] for i, b in jobs],
            [flat["right"][i][b] for i, b in jobs],
            [blocks[i][b] for i, b in jobs],
        )
        new_left = [list() for _ in leaves]
        new_right = [list() for _ in leaves]
        for (i, _), (lf, rf) in zip(jobs, stats, strict=True):
            new_left[i].append(lf)
            new_right[i].append(rf)

        # Roots: every factor of one size in one batched eigh, every k steps.
        factors = [new_left[i][b] for i, b in jobs] + [new_right[i][b] for i, b in jobs]
        old_roots = [flat["left_root"][i][b] for i, b in jobs] + [
            flat["right_root"][i][b] for i, b in jobs
        ]

        def recompute(factors, old_roots):
            return _matrix.batched(
                lambda f, r: _matrix.inverse_pth_root(
                    f, p, matrix_epsilon, relative=relative_matrix_epsilon, previous=r
                ),
                factors,
                old_roots,
            )

        if jobs:
            roots = lax.cond(
                step % preconditioning_compute_steps == 0,
                recompute,
                lambda f, r: list(r),
                factors,
                old_roots,
            )
        else:
            roots = []
        n_jobs = len(jobs)
        new_lroot = [list() for _ in leaves]
        new_rroot = [list() for _ in leaves]
        for k, (i, _) in enumerate(jobs):
            new_lroot[i].append(roots[k])
            new_rroot[i].append(roots[n_jobs + k])

        # Preconditioned direction, batched per block shape.
        dirs = _matrix.batched(
            lambda lr_, g, rr: lr_ @ g @ rr,
            [new_lroot[i][b] for i, b in jobs],
            [blocks[i][b] for i, b in jobs],
            [new_rroot[i][b] for i, b in jobs],
        )
        dir_blocks = [list() for _ in leaves]
        for (i, _), d in zip(jobs, dirs, strict=True):
            dir_blocks[i].append(d)

        outs, new_graft, new_mom, new_gmom = [], [], [], []
        run = step >= start_preconditioning_step
        for i, g in enumerate(grads):
            v = flat["graft"][i]
            if graft_type == "sgd":
                graft_dir = g
            elif graft_type == "adagrad":
                v = v + jnp.square(g)
                graft_dir = g / (jnp.sqrt(v) + diagonal_epsilon)
            else:
                v = beta2 * v + w2 * jnp.square(g)
                v_hat = v
                if graft_type == "adam":  # v over the weights' sum: 1 - beta2^t (or t)
                    v_hat = v / (
                        count.astype(g.dtype)
                        if beta2 == 1.0
                        else _numerics.one_minus_power(beta2, count, g.dtype)
                    )
                graft_dir = g / (jnp.sqrt(v_hat) + diagonal_epsilon)
            new_graft.append(v)
            if plans[i]:
                direction = _matrix.merge_blocks(dir_blocks[i], plans[i])
            else:
                direction = graft_dir
            s = _matrix.graft_norms(direction, graft_dir)
            s_hat = graft_dir
            if weight_decay:
                wd = weight_decay * ps[i].astype(g.dtype)
                s, s_hat = s + wd, s_hat + wd
            m = beta1 * mom[i].astype(g.dtype) + w_m * s
            mh = beta1 * gmom[i].astype(g.dtype) + w_m * s_hat
            mom_upd = jnp.where(run, m, mh)
            wd_upd = jnp.where(run, s, s_hat)
            out = w_m * wd_upd + beta1 * mom_upd if nesterov else mom_upd
            outs.append(out.astype(leaves[i].dtype))
            new_mom.append(m.astype(mom[i].dtype))
            new_gmom.append(mh.astype(gmom[i].dtype))

        def tree(xs):
            return treedef.unflatten(xs)

        return tree(outs), ShampooState(
            left=tree([tuple(x) for x in new_left]),
            right=tree([tuple(x) for x in new_right]),
            left_root=tree([tuple(x) for x in new_lroot]),
            right_root=tree([tuple(x) for x in new_rroot]),
            graft=tree(new_graft) if graft_type != "sgd" else state.graft,
            momentum=tree(new_mom),
            graft_momentum=tree(new_gmom),
        )

    # The rule, with the statistics in the order of the state's fields (L, R, P_L, P_R,
    # the grafting accumulator v, the momenta m and m-hat).
    w2_tex = "" if beta2 == 1.0 else r"(1 - \beta_2) "
    parts = [
        rf"L \leftarrow \beta_2 L + {w2_tex}u u^T",
        rf"R \leftarrow \beta_2 R + {w2_tex}u^T u",
        rf"P_L \leftarrow (L + \epsilon' I)^{{-1/{p}}} \text{{ every }} k \text{{ steps}}",
        rf"P_R \leftarrow (R + \epsilon' I)^{{-1/{p}}} \text{{ every }} k \text{{ steps}}",
    ]
    if graft_type == "adagrad":
        parts.append(r"v \leftarrow v + u^2")
    elif graft_type in ("rmsprop", "adam"):
        parts.append(rf"v \leftarrow \beta_2 v + {w2_tex}u^2")
    if graft_type == "sgd":
        graft_tex = "u"
    elif graft_type == "adam":
        corr = "t" if beta2 == 1.0 else r"(1 - \beta_2^t)"
        graft_tex = rf"\frac{{u}}{{\sqrt{{v / {corr}}} + \delta}}"
    else:
        graft_tex = r"\frac{u}{\sqrt{v} + \delta}"
    decay_tex = r" + \lambda w" if weight_decay else ""
    parts += [
        r"D = P_L u P_R",
        rf"s = D \frac{{\lVert {graft_tex} \rVert_F}}{{\lVert D \rVert_F}}{decay_tex}",
        rf"\hat s = {graft_tex}{decay_tex}",
    ]
    w_m_tex = r"(1 - \beta_1) " if moving_average_for_momentum else ""
    parts += [
        rf"m \leftarrow \beta_1 m + {w_m_tex}s",
        rf"\hat m \leftarrow \beta_1 \hat m + {w_m_tex}\hat s",
    ]
    if nesterov:
        run, warm = rf"{w_m_tex}s + \beta_1 m", rf"{w_m_tex}\hat s + \beta_1 \hat m"
    else:
        run, warm = "m", r"\hat m"
    parts.append(
        rf"u \leftarrow \begin{{cases}} {run} & t > t_0 \\ {warm} & \text{{otherwise}}"
        r"\end{cases}"
    )
    fields = ("left", "right", "left_root", "right_root")
    fields += () if graft_type == "sgd" else ("graft",)
    init_fn, update_fn = _owning_step(init_inner, update_inner, "scale_by_shampoo")
    return with_info(
        GradientTransformation(init_fn, update_fn),
        "scale_by_shampoo",
        "statistic",
        hyperparams={
            "beta1": beta1,
            "beta2": beta2,
            "diagonal_epsilon": diagonal_epsilon,
            "matrix_epsilon": matrix_epsilon,
            "weight_decay": weight_decay,
        },
        math=r";\quad ".join(parts),
        state=(*fields, "momentum", "graft_momentum"),
    )


def shampoo(
    learning_rate: ScalarOrSchedule,
    block_size: int = 128,
    beta1: float = 0.9,
    beta2: float = 0.999,
    diagonal_epsilon: float = 1e-10,
    matrix_epsilon: float = 1e-6,
    weight_decay: float = 0.0,
    start_preconditioning_step: int = 5,
    preconditioning_compute_steps: int = 1,
    *,
    graft_type: str = "rmsprop",
    nesterov: bool = True,
    exponent_override: int = 0,
    moving_average_for_momentum: bool = False,
    skip_preconditioning_dim_size_gt: int = 4096,
    relative_matrix_epsilon: bool = True,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    matrix_rule: Callable[[tuple, Any], bool] | Any | None = None,
) -> GradientTransformation:
    r"""Shampoo (Distributed Shampoo's rule) for the matrices, AdamW for the rest.

    For each matrix :math:`w` (each block of it) with gradient :math:`G`, and for every
    other parameter :math:`w` with gradient :math:`g` (the defaults: RMSProp grafting,
    Nesterov momentum):

    .. math::
        L \leftarrow \beta_2 L + (1 - \beta_2) G G^T, \quad
        R \leftarrow \beta_2 R + (1 - \beta_2) G^T G, \quad
        P_L \leftarrow (L + \epsilon' I)^{-1/4}, \quad
        P_R \leftarrow (R + \epsilon' I)^{-1/4}, \\
        v \leftarrow \beta_2 v + (1 - \beta_2) G^2, \quad
        D = P_L G P_R, \quad
        s = D \frac{\lVert G / (\sqrt{v} + \epsilon_d) \rVert_F}{\lVert D \rVert_F}
          + \lambda w, \quad
        \hat s = \frac{G}{\sqrt{v} + \epsilon_d} + \lambda w, \\
        m \leftarrow \beta_1 m + s, \quad
        \hat m \leftarrow \beta_1 \hat m + \hat s, \quad
        w \leftarrow w - \alpha \begin{cases} s + \beta_1 m & t > t_0 \\
          \hat s + \beta_1 \hat m & \text{otherwise} \end{cases}, \\
        \mu_t = \rho_1 \mu_{t-1} + (1 - \rho_1) g_t, \quad
        \nu_t = \rho_2 \nu_{t-1} + (1 - \rho_2) g_t^2, \quad
        w \leftarrow w - \alpha \left(\frac{\mu_t / (1 - \rho_1^t)}
          {\sqrt{\nu_t / (1 - \rho_2^t)} + \delta} + \lambda_a w\right)

    with :math:`\epsilon' = \epsilon \max(\lambda_{\max}, 10^{-6})` (relative ridge) and
    :math:`t_0` ``start_preconditioning_step``: :func:`scale_by_shampoo` for the
    matrices (its docstring has every option), AdamW for the rest. The roots
    :math:`P_L, P_R` are recomputed every ``preconditioning_compute_steps`` steps, the
    factors of same-sized blocks together (one batched ``eigh`` per size).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule.
      block_size: see :func:`scale_by_shampoo` (and the rest of its arguments).
      beta1: :math:`\beta_1`, the momentum.
      beta2: :math:`\beta_2`, the factors' and RMSProp's decay.
      diagonal_epsilon: :math:`\epsilon_d`, the grafting rule's epsilon.
      matrix_epsilon: :math:`\epsilon`, the factors' ridge.
      weight_decay: :math:`\lambda`, coupled weight decay of the matrices.
      start_preconditioning_step: steps of grafting only before Shampoo starts.
      preconditioning_compute_steps: the roots are recomputed every this many steps.
      graft_type: ``"sgd"``, ``"adagrad"``, ``"rmsprop"`` or ``"adam"`` (bias-corrected
        RMSProp; with ``moving_average_for_momentum=True`` the step is Adam-sized, so
        that one learning rate suits the matrices and the AdamW part: see the warning of
        :func:`scale_by_shampoo`).
      nesterov: Nesterov momentum.
      exponent_override: the root's order (default 4).
      moving_average_for_momentum: EMA momentum instead of a sum.
      skip_preconditioning_dim_size_gt: larger matrices are only grafted.
      relative_matrix_epsilon: scale the ridge by the largest eigenvalue.
      adam_b1: :math:`\rho_1`, AdamW's first decay (the non-matrix parameters).
      adam_b2: :math:`\rho_2`, AdamW's second decay.
      adam_eps: :math:`\delta`, AdamW's epsilon.
      adam_weight_decay: :math:`\lambda_a`, AdamW's weight decay.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      matrix_rule: see :func:`muon`.

    Returns:
      A :func:`gbopt.multi_transform` transform.

    References:
      Gupta, Koren & Singer, ICML 2018; Anil et al., arXiv:2002.09018 (reference code:
      google-research/google-research, ``scalable_shampoo/optax/distributed_shampoo.py``).
    """
    _validate.learning_rate(learning_rate)
    matrix_tx = with_step_count(
        chain(
            scale_by_shampoo(
                block_size,
                beta1,
                beta2,
                diagonal_epsilon,
                matrix_epsilon,
                weight_decay,
                start_preconditioning_step,
                preconditioning_compute_steps,
                graft_type=graft_type,
                nesterov=nesterov,
                exponent_override=exponent_override,
                moving_average_for_momentum=moving_average_for_momentum,
                skip_preconditioning_dim_size_gt=skip_preconditioning_dim_size_gt,
                relative_matrix_epsilon=relative_matrix_epsilon,
            ),
            scale_by_learning_rate(learning_rate),
        )
    )
    other_tx = _adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        adam_b1,
        adam_b2,
        adam_eps,
        adam_weight_decay,
    )
    return named(
        "shampoo",
        _matrix.partition_matrices(matrix_tx, other_tx, matrix_rule),
        learning_rate=learning_rate,
        block_size=block_size,
        beta1=beta1,
        beta2=beta2,
        diagonal_epsilon=diagonal_epsilon,
        matrix_epsilon=matrix_epsilon,
        weight_decay=weight_decay,
        start_preconditioning_step=start_preconditioning_step,
        preconditioning_compute_steps=preconditioning_compute_steps,
        graft_type=graft_type,
        nesterov=nesterov,
        adam_b1=adam_b1,
        adam_b2=adam_b2,
        adam_eps=adam_eps,
        adam_weight_decay=adam_weight_decay,
        adam_learning_rate=adam_learning_rate,
    )


# ----------------------------------------------------------------------------------------
# SOAP.


class SoapState(NamedTuple):
    """State of :func:`scale_by_soap`.

    The step comes from an enclosing :func:`gbopt.with_step_count` (or a
    :class:`gbopt.StepCountState` around this state when used alone); the first update
    only initialises.

    Attributes:
      mu: the first moment, in the eigenbasis (per parameter).
      nu: the second moment, in the eigenbasis.
      left: :math:`L` (``None`` for a dimension above ``max_precond_dim``).
      right: :math:`R` (same).
      q_left: the eigenbasis :math:`Q_L` of :math:`L` (same).
      q_right: :math:`Q_R` (same).
    """

    mu: Any
    nu: Any
    left: Any
    right: Any
    q_left: Any
    q_right: Any


def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float = -1.0,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    *,
    normalize_grads: bool = False,
    correct_bias: bool = True,
) -> GradientTransformation:
    r"""SOAP's direction: Adam run in the eigenbasis of Shampoo's factors.

    The first call only initialises: :math:`L, R \leftarrow (1 - \beta_s) G G^T,
    (1 - \beta_s) G^T G`, :math:`Q_L, Q_R` their eigenvectors (decreasing eigenvalues),
    and returns zeros. Then, at Adam step :math:`t = 1, 2, \dots`:

    .. math::
        G' = Q_L^T G Q_R, \quad
        m \leftarrow \beta_1 m + (1 - \beta_1) G', \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) G'^2,
        \\
        \text{out} = \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\;
            Q_L \frac{m}{\sqrt v + \epsilon} Q_R^T,
        \\
        L \leftarrow \beta_s L + (1 - \beta_s) G G^T, \quad
        R \leftarrow \beta_s R + (1 - \beta_s) G^T G,

    and every ``precondition_frequency`` steps the bases are refreshed by one power
    iteration and a QR decomposition (:func:`gbopt._matrix.refine_eigenbasis`), with
    :math:`v` permuted like the columns and :math:`m` rotated into the new basis.
    A dimension larger than ``max_precond_dim`` is not rotated. Same-shaped matrices
    are processed together (batched ``eigh``/``qr``).

    Args:
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      shampoo_beta: :math:`\beta_s` of the factors (< 0: ``b2``).
      eps: :math:`\epsilon`.
      precondition_frequency: the bases are refreshed every this many steps.
      max_precond_dim: larger dimensions get no factor.
      normalize_grads: divide the output by its RMS.
      correct_bias: the factor :math:`\sqrt{1 - \beta_2^t} / (1 - \beta_1^t)`.

    Returns:
      A transform with state :class:`SoapState`.

    References:
      Vyas et al., "SOAP: Improving and stabilizing Shampoo using Adam", ICLR 2025,
      arXiv:2409.11321 (reference code: github.com/nikhilvyas/SOAP).
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps", eps)
    _validate.whole_number("precondition_frequency", precondition_frequency, 1)
    _validate.whole_number("max_precond_dim", max_precond_dim, 1)
    beta_s = b2 if shampoo_beta < 0 else shampoo_beta

    def has(d):
        return 0 < d <= max_precond_dim

    def init_inner(params):
        _matrix.check_matrices(params, "scale_by_soap")
        leaves, treedef = jax.tree.flatten(params)

        def fac(x, axis):
            d = x.shape[axis]
            return jnp.zeros((d, d), _dtypes.state_dtype(x.dtype)) if has(d) else None

        def basis(x, axis):
            d = x.shape[axis]
            return jnp.eye(d, dtype=_dtypes.state_dtype(x.dtype)) if has(d) else None

        def tree(fn):
            return treedef.unflatten([fn(x) for x in leaves])

        return SoapState(
            mu=_placement.zeros_like(params),
            nu=_placement.zeros_like(params),
            left=tree(lambda x: fac(x, 0)),
            right=tree(lambda x: fac(x, 1)),
            q_left=tree(lambda x: basis(x, 0)),
            q_right=tree(lambda x: basis(x, 1)),
        )

    def first(g, mu, nu, lf, rf, ql, qr):
        gt = jnp.swapaxes(g, -1, -2)
        if lf is not None:
            lf = beta_s * lf + (1 - beta_s) * (g @ gt)
            ql = _matrix.eigenbasis(lf, ql)
        if rf is not None:
            rf = beta_s * rf + (1 - beta_s) * (gt @ g)
            qr = _matrix.eigenbasis(rf, qr)
        return jnp.zeros_like(g), mu, nu, lf, rf, ql, qr

    def later(t, g, mu, nu, lf, rf, ql, qr):
        gp = _matrix.project(g, ql, qr)
        mu = b1 * mu + (1 - b1) * gp
        nu = b2 * nu + (1 - b2) * jnp.square(gp)
        out = _matrix.project_back(mu / (jnp.sqrt(nu) + eps), ql, qr)
        if normalize_grads:
            rms = jnp.sqrt(jnp.mean(jnp.square(out), axis=(-2, -1), keepdims=True))
            out = out / (1e-30 + rms)
        if correct_bias:
            out = out * (
                jnp.sqrt(_numerics.one_minus_power(b2, t, g.dtype))
                / _numerics.one_minus_power(b1, t, g.dtype)
            )
        mu_orig = _matrix.project_back(mu, ql, qr)
        gt = jnp.swapaxes(g, -1, -2)
        if lf is not None:
            lf = beta_s * lf + (1 - beta_s) * (g @ gt)
        if rf is not None:
            rf = beta_s * rf + (1 - beta_s) * (gt @ g)

        def refresh(ql, qr, nu):
            if lf is not None:
                ql, perm = _matrix.refine_eigenbasis(lf, ql)
                nu = jnp.take_along_axis(nu, perm[..., :, None], axis=-2)
            if rf is not None:
                qr, perm = _matrix.refine_eigenbasis(rf, qr)
                nu = jnp.take_along_axis(nu, perm[..., None, :], axis=-1)
            return ql, qr, nu

        ql, qr, nu = lax.cond(
            t % precondition_frequency == 0, refresh, lambda a, b, c: (a, b, c), ql, qr, nu
        )
        mu = _matrix.project(mu_orig, ql, qr)
        return out, mu, nu, lf, rf, ql, qr

    def update_inner(updates, state, params, count, **extra_args):
        del params, extra_args
        expect_state(state, SoapState, "scale_by_soap")
        _matrix.check_matrices(updates, "scale_by_soap")
        leaves, treedef = jax.tree.flatten(updates)
        names = ("mu", "nu", "left", "right", "q_left", "q_right")
        cols = [treedef.flatten_up_to(getattr(state, n)) for n in names]
        grads = [u.astype(m.dtype) for u, m in zip(leaves, cols[0], strict=True)]
        t = count - 1  # Adam steps done before this call (calls - 1 after the first)

        def per_group(g, mu, nu, lf, rf, ql, qr):
            if g.size == 0:
                return g, mu, nu, lf, rf, ql, qr
            return lax.cond(
                t == 0,
                lambda *a: first(*a),
                lambda *a: later(t, *a),
                g,
                mu,
                nu,
                lf,
                rf,
                ql,
                qr,
            )

        results = _matrix.batched(per_group, grads, *cols)
        outs = [r[0].astype(u.dtype) for r, u in zip(results, leaves, strict=True)]
        new = [treedef.unflatten([r[k + 1] for r in results]) for k in range(6)]
        return treedef.unflatten(outs), SoapState(*new)

    # The rule at Adam step t (the first call only sets L, R and the bases), with the
    # statistics in the order of the state's fields: m, v, L, R, Q_L, Q_R.
    beta_s_tex = r"\beta_2" if shampoo_beta < 0 else r"\beta_s"
    scale_tex = r"\frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} " if correct_bias else ""
    out_tex = rf"{scale_tex}Q_L \frac{{m}}{{\sqrt{{v}} + \delta}} Q_R^T"
    if normalize_grads:
        out_tex = rf"\operatorname{{normalize}}({out_tex})"
    parts = [
        r"G' = Q_L^T u Q_R",
        r"m \leftarrow \beta_1 m + (1 - \beta_1) G'",
        r"v \leftarrow \beta_2 v + (1 - \beta_2) G'^2",
        rf"o = {out_tex}",
        rf"L \leftarrow {beta_s_tex} L + (1 - {beta_s_tex}) u u^T",
        rf"R \leftarrow {beta_s_tex} R + (1 - {beta_s_tex}) u^T u",
        r"Q_L \leftarrow \text{eigenbasis of } L \text{ every } f \text{ steps}",
        r"Q_R \leftarrow \text{eigenbasis of } R \text{ every } f \text{ steps}",
        r"u \leftarrow o",
    ]
    init_fn, update_fn = _owning_step(init_inner, update_inner, "scale_by_soap")
    return with_info(
        GradientTransformation(init_fn, update_fn),
        "scale_by_soap",
        "statistic",
        hyperparams={"b1": b1, "b2": b2, "eps": eps, "shampoo_beta": shampoo_beta},
        math=r";\quad ".join(parts),
        state=("mu", "nu", "left", "right", "q_left", "q_right"),
    )


class DecayAfterStepState(NamedTuple):
    """State of :func:`decay_after_step`: empty.

    The step comes from an enclosing :func:`gbopt.with_step_count` (or a
    :class:`gbopt.StepCountState` around this state when used alone).
    """


def decay_after_step(
    learning_rate: ScalarOrSchedule, weight_decay: float, *, skip_first: bool = False
) -> GradientTransformation:
    r"""Decoupled weight decay applied to the stepped weights (SOAP's reference order).

    .. math:: u \leftarrow u - \alpha_t \lambda\, (w + u)

    so that :math:`w + u = (w + u_{\text{in}})(1 - \alpha_t\lambda)`: the weights are
    stepped, then decayed (AdamW decays the weights before the step, a difference of
    :math:`\alpha_t \lambda\, u`).

    Args:
      learning_rate: :math:`\alpha`, a number or a schedule of the step count.
      weight_decay: :math:`\lambda`.
      skip_first: no decay on the first update (SOAP's first call only initialises).

    Returns:
      A transform with state :class:`DecayAfterStepState` (inside a
      :class:`gbopt.StepCountState` when used alone).
    """
    _validate.learning_rate(learning_rate)
    _validate.non_negative("weight_decay", weight_decay)

    def init_inner(params):
        del params
        return DecayAfterStepState()

    def update_inner(updates, state, params, count, **extra_args):
        del extra_args
        expect_state(state, DecayAfterStepState, "decay_after_step")
        if not weight_decay:
            return updates, state
        if params is None:
            raise ValueError("decay_after_step: needs `params` at update (weight_decay > 0).")
        before = count - 1  # the updates before this one
        lr = learning_rate(before) if callable(learning_rate) else learning_rate
        on = (before > 0) if skip_first else True

        def leaf(u, w):
            dt = _compute_dtype(u.dtype)
            u32 = u.astype(dt)
            out = u32 - jnp.asarray(lr, dt) * weight_decay * (w.astype(dt) + u32)
            return jnp.where(on, out, u32).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    init_fn, update_fn = _owning_step(init_inner, update_inner, "decay_after_step")

    return with_info(
        GradientTransformation(init_fn, update_fn),
        "decay_after_step",
        hyperparams={"learning_rate": learning_rate, "weight_decay": weight_decay},
        math=r"u - \alpha_t \lambda (w + u)" if weight_decay else "u",
    )


def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: float = 0.95,
    b2: float = 0.95,
    shampoo_beta: float = -1.0,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    *,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    adam_learning_rate: ScalarOrSchedule | None = None,
    matrix_rule: Callable[[tuple, Any], bool] | Any | None = None,
) -> GradientTransformation:
    r"""SOAP for the matrices (Adam in Shampoo's eigenbasis), AdamW for the rest.

    For each matrix :math:`w` with gradient :math:`G`, and for every other parameter
    :math:`w` with gradient :math:`g`:

    .. math::
        G' = Q_L^T G Q_R, \quad
        m \leftarrow \beta_1 m + (1 - \beta_1) G', \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) G'^2, \\
        w \leftarrow \left(w - \alpha \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\,
          Q_L \frac{m}{\sqrt{v} + \epsilon} Q_R^T\right)(1 - \alpha \lambda), \\
        L \leftarrow \beta_2 L + (1 - \beta_2) G G^T, \quad
        R \leftarrow \beta_2 R + (1 - \beta_2) G^T G, \quad
        Q_L \leftarrow \text{eigenbasis of } L, \quad
        Q_R \leftarrow \text{eigenbasis of } R, \\
        \mu_t = \beta_1 \mu_{t-1} + (1 - \beta_1) g_t, \quad
        \nu_t = \beta_2 \nu_{t-1} + (1 - \beta_2) g_t^2, \quad
        w \leftarrow w - \alpha \left(\frac{\mu_t / (1 - \beta_1^t)}
          {\sqrt{\nu_t / (1 - \beta_2^t)} + \epsilon} + \lambda w\right)

    :func:`scale_by_soap` for the matrices (the factors decay by ``shampoo_beta``
    instead of :math:`\beta_2` when it is >= 0; the bases :math:`Q_L, Q_R` are refreshed
    every ``precondition_frequency`` steps, with :math:`m, v` carried into the new
    basis), in the authors' reference order: step, then decay
    (:func:`decay_after_step`). The first update only initialises the factors and
    changes no matrix. The other parameters take AdamW with the same
    :math:`\beta_1, \beta_2, \epsilon, \lambda`.

    Args:
      learning_rate: :math:`\alpha` (3e-3 in the reference).
      b1: :math:`\beta_1`.
      b2: :math:`\beta_2`.
      shampoo_beta: the factors' decay (< 0: ``b2``).
      eps: :math:`\epsilon`.
      weight_decay: :math:`\lambda`.
      precondition_frequency: the eigenbases are refreshed every this many steps.
      max_precond_dim: dimensions above this get no factor.
      normalize_grads: see :func:`scale_by_soap`.
      correct_bias: see :func:`scale_by_soap`.
      adam_learning_rate: AdamW's learning rate (default ``learning_rate``).
      matrix_rule: see :func:`muon`.

    Returns:
      A :func:`gbopt.multi_transform` transform.

    References:
      Vyas et al., "SOAP: Improving and stabilizing Shampoo using Adam", ICLR 2025.

    Note:
      The reference SOAP also sends 1-D parameters through its own Adam (which skips
      their first step too); gbopt gives them AdamW (optax's order) by default.
    """
    _validate.learning_rate(learning_rate)
    matrix_tx = with_step_count(
        chain(
            scale_by_soap(
                b1,
                b2,
                shampoo_beta,
                eps,
                precondition_frequency,
                max_precond_dim,
                normalize_grads=normalize_grads,
                correct_bias=correct_bias,
            ),
            scale_by_learning_rate(learning_rate),
            decay_after_step(learning_rate, weight_decay, skip_first=True),
        )
    )
    other_tx = _adamw(
        learning_rate if adam_learning_rate is None else adam_learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
    )
    return named(
        "soap",
        _matrix.partition_matrices(matrix_tx, other_tx, matrix_rule),
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        shampoo_beta=shampoo_beta,
        eps=eps,
        weight_decay=weight_decay,
        precondition_frequency=precondition_frequency,
        max_precond_dim=max_precond_dim,
        normalize_grads=normalize_grads,
        correct_bias=correct_bias,
        adam_learning_rate=adam_learning_rate,
    )
