r"""Averages of the iterates (Polyak-Ruppert averaging), kept beside an optimizer's state.

:func:`averaged_iterate` passes the updates through unchanged and keeps the running
average of the parameters they lead to, :math:`w_t = w_{t-1} + u_t`: ASGD's ``ax``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gbopt import _validate
from gbopt._base import GradientTransformation, statistic


class AveragedIterateState(NamedTuple):
    r"""State of :func:`averaged_iterate`.

    Attributes:
      ax: the average :math:`\bar w` of the parameters after each update, one array per
        parameter (read it with ``gbopt.state_get(state, "ax")``).
    """

    ax: Any


def averaged_iterate(t0: float | jax.Array = 0.0) -> GradientTransformation:
    r"""Keeps the average of the iterates from step :math:`t_0` on; the updates pass unchanged.

    With :math:`w_t = w_{t-1} + u_t` the parameters after this update (:math:`t` the
    1-based step):

    .. math::
        \mu_t = \frac{1}{\max(1,\; t - 1 - t_0)}, \qquad
        \bar w_t = \bar w_{t-1} + \mu_t (w_t - \bar w_{t-1}), \qquad \bar w_0 = 0

    so :math:`\bar w_t = w_t` until step :math:`t_0 + 2`, and from there the running
    mean of the iterates since step :math:`t_0 + 1`. This is PyTorch's ``ASGD`` average
    ``ax`` (whose :math:`\mu` lags the step by one). Place it last in a chain, where the
    updates are the ones applied to the parameters.

    Args:
      t0: :math:`t_0` >= 0, the step at which averaging starts.

    Returns:
      A transform with state :class:`AveragedIterateState`; ``update`` needs ``params``.

    References:
      Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging",
      SIAM J. Control Optim. 1992.
    """
    _validate.non_negative("t0", t0)

    def prepare(dtype, step):
        later = (step - 1).astype(dtype) - jnp.asarray(t0, dtype)
        return 1 / jnp.maximum(jnp.ones([], dtype), later), step == 1

    def rule(u, ax, *, param, pre):
        mu, first = pre
        w = param.astype(u.dtype) + u
        ax = jnp.where(first | (mu == 1), w, ax + (w - ax) * mu.astype(ax.dtype))
        return u, ax

    return statistic(
        "averaged_iterate",
        AveragedIterateState,
        rule,
        needs_step=True,
        needs_params=True,
        prepare=prepare,
        hyperparams={"t0": t0},
        math=r"u;\; \bar w \leftarrow \bar w + \mu_t (w + u - \bar w)",
    )
