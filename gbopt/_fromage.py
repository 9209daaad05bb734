r"""Fromage: the trust-ratio step, then the new parameters shrunk by :math:`1/\sqrt{1+\eta^2}`.

The new primitive is :func:`scale_new_params`, a map of the update that multiplies the
parameters it leads to by a factor; the trust ratio is the LARS/LAMB primitive
``scale_by_trust_ratio`` of the adaptive family (``gbopt._statistics_adaptive``)::

    fromage = chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(lr),
                    scale_new_params(1 / sqrt(1 + lr**2)))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gbopt import _dtypes, _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, elementwise, named
from gbopt._combine import chain, with_step_count
from gbopt._maps import scale_by_learning_rate


def scale_new_params(factor: ScalarOrSchedule) -> GradientTransformation:
    r"""Turns the update into one whose result is the new parameters times ``factor``.

    .. math:: u \leftarrow c_t\,(w + u) - w, \qquad\text{so}\qquad w + u = c_t\,(w + u_{\text{in}})

    Placed last in a chain it rescales the parameters after the step (Fromage's
    :math:`1/\sqrt{1 + \eta^2}`; a decay :math:`c = 1 - \alpha\lambda` after the step is
    decoupled weight decay applied after it). optax writes Fromage's with
    ``add_decayed_weights(c - 1)`` after the learning rate, the same rule up to rounding.

    Args:
      factor: :math:`c`, a finite number or a schedule ``count -> value``.

    Returns:
      A stateless map that needs ``params`` (with a step count when ``factor`` is a
      schedule and no step owner encloses it).
    """
    if not callable(factor):
        _validate.finite("factor", factor)

        def fn(u, *, param):
            w = param.astype(u.dtype)
            return _dtypes.scalar(factor, u.dtype) * (w + u) - w

        return elementwise(
            "scale_new_params",
            fn,
            needs_params=True,
            hyperparams={"factor": factor},
            math=r"c\,(w + u) - w",
        )

    def prepare(dtype, step):
        return jnp.asarray(factor(step - 1)).astype(dtype)

    def scheduled(u, *, param, pre):
        w = param.astype(u.dtype)
        return pre.astype(u.dtype) * (w + u) - w

    return elementwise(
        "scale_new_params",
        scheduled,
        needs_step=True,
        needs_params=True,
        prepare=prepare,
        hyperparams={"factor": factor},
        math=r"c_t\,(w + u) - w",
    )


def fromage(
    learning_rate: ScalarOrSchedule, min_norm: float | jax.Array = 1e-6
) -> GradientTransformation:
    r"""Fromage (Frobenius matched gradient descent): a relative step, then a shrink.

    .. math::
        w \leftarrow \frac{1}{\sqrt{1 + \eta_t^2}}
          \left(w - \eta_t \frac{\|w\|}{\|g\|}\, g\right) \quad\text{per leaf}

    (norms floored at ``min_norm``; a leaf whose parameter or gradient is zero takes the
    plain step :math:`\eta_t g`). Drop-in for ``optax.fromage`` (same signature,
    defaults and rule, up to rounding).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      min_norm: the floor of both norms in the trust ratio.

    Returns:
      ``chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(learning_rate),
      scale_new_params(1 / sqrt(1 + learning_rate**2)))`` (inside ``with_step_count``
      for a schedule).

    References:
      Bernstein, Vahdat, Yue & Liu, "On the distance between two neural networks and the
      stability of learning", NeurIPS 2020.
    """
    # The trust ratio is the adaptive family's primitive (LARS, LAMB).
    from gbopt._statistics_adaptive import scale_by_trust_ratio

    if callable(learning_rate):
        pieces = chain(
            scale_by_trust_ratio(min_norm),
            scale_by_learning_rate(learning_rate),
            scale_new_params(lambda count: 1 / jnp.sqrt(1 + learning_rate(count) ** 2)),
        )
        return named("fromage", with_step_count(pieces), learning_rate=learning_rate)
    _validate.learning_rate(learning_rate)
    return named(
        "fromage",
        chain(
            scale_by_trust_ratio(min_norm),
            scale_by_learning_rate(learning_rate),
            scale_new_params(1 / (1 + learning_rate**2) ** 0.5),
        ),
        learning_rate=learning_rate,
        min_norm=min_norm,
    )
