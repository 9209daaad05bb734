r"""The optimizers of the seed document, each a single :func:`gbopt.chain` of primitives.

Every rule is the one in Goodfellow, Bengio & Courville, *Deep Learning*, ch. 8
(Algorithms 8.1-8.7), with the seed document's errata fixed (see ``MATH.md``). Symbols:
:math:`\alpha` learning rate, :math:`g` the (minibatch) gradient, :math:`\mu` momentum,
:math:`\rho` decay, :math:`\delta` ``eps``, :math:`t` the 1-based step.

``learning_rate`` accepts a float, an array or a schedule ``count -> value`` everywhere.
"""

from __future__ import annotations

import jax

from gbopt import _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, identity
from gbopt._combine import chain, divide, with_step_count
from gbopt._moments import accumulate_square, bias_correction, ema, trace
from gbopt._scaling import add, scale_by_learning_rate, sqrt


def sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""Gradient descent, SGD and minibatch SGD (Alg. 8.1).

    .. math:: w \leftarrow w - \alpha\, g

    The three differ only in the data the gradient is computed on: the whole set
    (gradient descent), one random example (SGD) or a random minibatch of :math:`B`
    examples, :math:`g = \frac{1}{B}\sum_i \nabla L_i` (minibatch SGD).

    Args:
      learning_rate: :math:`\alpha` (no default; PyTorch's is 1e-3).

    Returns:
      ``chain(scale_by_learning_rate(learning_rate))``.

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.sgd(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([1.0, 1.0])}, state, params)
      >>> gbopt.apply_updates(params, updates)["w"]
      Array([ 0.9, -2.1], dtype=float32)

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Robbins & Monro, 1951; Goodfellow et al., *Deep Learning*, Alg. 8.1.
    """
    return chain(scale_by_learning_rate(learning_rate))


gd = sgd
"""Alias of :func:`sgd`: gradient descent is SGD on the whole data set."""


def momentum(
    learning_rate: ScalarOrSchedule, momentum: float | jax.Array = 0.9
) -> GradientTransformation:
    r"""SGD with momentum (Alg. 8.2), the learning rate inside the velocity.

    .. math::
        v \leftarrow \mu v - \alpha g, \qquad w \leftarrow w + v, \qquad v_0 = 0

    With a constant :math:`\alpha` this equals PyTorch's ``SGD(lr, momentum)`` and
    ``optax.sgd(lr, momentum)`` (which keep :math:`\alpha` outside the buffer); with a
    schedule it follows the book, and they do not (CONVENTIONS.md §4.2).

    Args:
      learning_rate: :math:`\alpha`.
      momentum: :math:`\mu` in [0, 1) (the seed's :math:`\epsilon`); 0.9 here and in optax's
        examples, 0 in PyTorch.

    Returns:
      ``chain(scale_by_learning_rate(learning_rate), trace(momentum))``.

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, or ``momentum``
        outside [0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Polyak, 1964; Goodfellow et al., Alg. 8.2.
    """
    _validate.decay_rate("momentum", momentum)
    return chain(scale_by_learning_rate(learning_rate), trace(momentum))


def nesterov(
    learning_rate: ScalarOrSchedule, momentum: float | jax.Array = 0.9
) -> GradientTransformation:
    r"""SGD with Nesterov momentum (Alg. 8.3), reformulated to need only :math:`g(w)`.

    The book takes the gradient at the interim point :math:`w + \mu v`:

    .. math:: v \leftarrow \mu v - \alpha \nabla L(w + \mu v), \qquad w \leftarrow w + v

    gbopt holds :math:`\phi = w + \mu v` instead and updates it with the gradient there:

    .. math::
        v \leftarrow \mu v - \alpha g(\phi), \qquad
        \phi \leftarrow \phi + \mu v - \alpha g(\phi)

    so its parameters after step :math:`t` equal the book's :math:`w_t + \mu v_t` (as do
    PyTorch's ``nesterov=True`` and optax's); the book's :math:`w_t` is
    ``params - momentum * state.trace``.

    Args:
      learning_rate: :math:`\alpha`.
      momentum: :math:`\mu` in (0, 1).

    Returns:
      ``chain(scale_by_learning_rate(learning_rate), trace(momentum, nesterov=True))``.

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, or ``momentum``
        outside (0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Nesterov, 1983; Sutskever et al., 2013; Goodfellow et al., Alg. 8.3.
    """
    _validate.decay_rate("momentum", momentum)
    _validate.nesterov_momentum("momentum", momentum)
    return chain(scale_by_learning_rate(learning_rate), trace(momentum, nesterov=True))


def adagrad(
    learning_rate: ScalarOrSchedule, eps: float | jax.Array = 1e-7
) -> GradientTransformation:
    r"""AdaGrad (Alg. 8.4): divide by the root of the summed squares, :math:`\delta` outside.

    .. math::
        r \leftarrow r + g^2, \qquad w \leftarrow w - \frac{\alpha}{\delta + \sqrt{r}}\, g,
        \qquad r_0 = 0

    Args:
      learning_rate: :math:`\alpha`; PyTorch's default is 1e-2.
      eps: :math:`\delta` >= 0, **outside** the root. Default 1e-7 (the book's); PyTorch:
        1e-10 (outside); optax ``adagrad``: 1e-7 **inside** the root with
        :math:`r_0 = 0.1`, so optax cannot reproduce this rule.

    Returns:
      ``chain(divide(identity(), chain(accumulate_square(), sqrt(), add(eps))),
      scale_by_learning_rate(learning_rate))``.

    Raises:
      ValueError: for a ``learning_rate`` or ``eps`` < 0, NaN or infinite, naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Duchi, Hazan & Singer, 2011; Goodfellow et al., Alg. 8.4.
    """
    _validate.non_negative("eps", eps)
    return chain(
        divide(identity(), chain(accumulate_square(), sqrt(), add(eps))),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: ScalarOrSchedule, decay: float | jax.Array = 0.9, eps: float | jax.Array = 1e-6
) -> GradientTransformation:
    r"""RMSProp (Alg. 8.5): scale by the root of a moving average of squares, :math:`\delta` inside.

    .. math::
        r \leftarrow \rho r + (1 - \rho) g^2, \qquad
        w \leftarrow w - \frac{\alpha}{\sqrt{\delta + r}}\, g, \qquad r_0 = 0

    The first step is :math:`\alpha / \sqrt{1 - \rho}` times the sign of :math:`g`
    (3.16 :math:`\alpha` at :math:`\rho = 0.9`).

    Args:
      learning_rate: :math:`\alpha`; PyTorch's default is 1e-2.
      decay: :math:`\rho` in [0, 1); 0.9 (book, optax), PyTorch's ``alpha`` is 0.99.
      eps: :math:`\delta` >= 0, **inside** the root. Default 1e-6 (the book's); optax:
        1e-8 inside (``eps_in_sqrt=True``); PyTorch: 1e-8 **outside**.

    Returns:
      ``chain(divide(identity(), chain(accumulate_square(decay), add(eps), sqrt())),
      scale_by_learning_rate(learning_rate))``.

    Raises:
      ValueError: for a ``learning_rate`` or ``eps`` < 0, NaN or infinite, or ``decay``
        outside [0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Tieleman & Hinton, Lecture 6.5, 2012; Goodfellow et al., Alg. 8.5.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("eps", eps)
    return chain(
        divide(identity(), chain(accumulate_square(decay), add(eps), sqrt())),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop_nesterov(
    learning_rate: ScalarOrSchedule,
    decay: float | jax.Array = 0.9,
    momentum: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
) -> GradientTransformation:
    r"""RMSProp with Nesterov momentum (Alg. 8.6), reformulated as :func:`nesterov`.

    The book takes the gradient at :math:`w + \mu v`:

    .. math::
        r \leftarrow \rho r + (1-\rho) g^2, \qquad
        v \leftarrow \mu v - \frac{\alpha}{\sqrt{\delta + r}}\, g, \qquad w \leftarrow w + v

    gbopt's parameters are the book's interim point :math:`w + \mu v`, as in
    :func:`nesterov`. The book prints no :math:`\delta`; gbopt puts ``eps`` inside the
    root as in :func:`rmsprop`, so ``eps=0`` is the book's rule to the letter.

    Args:
      learning_rate: :math:`\alpha`.
      decay: :math:`\rho` in [0, 1).
      momentum: :math:`\mu` in (0, 1).
      eps: :math:`\delta` >= 0, inside the root (default 1e-6). optax's
        ``rmsprop(lr, decay, eps, momentum=μ, nesterov=True)`` is the same rule; PyTorch
        has no equivalent.

    Returns:
      ``chain(divide(identity(), chain(accumulate_square(decay), add(eps), sqrt())),
      scale_by_learning_rate(learning_rate), trace(momentum, nesterov=True))``.

    Raises:
      ValueError: for a ``learning_rate`` or ``eps`` < 0, NaN or infinite, ``decay``
        outside [0, 1) or ``momentum`` outside (0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Goodfellow et al., Alg. 8.6.
    """
    _validate.decay_rate("decay", decay)
    _validate.decay_rate("momentum", momentum)
    _validate.nesterov_momentum("momentum", momentum)
    _validate.non_negative("eps", eps)
    return chain(
        divide(identity(), chain(accumulate_square(decay), add(eps), sqrt())),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov=True),
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
) -> GradientTransformation:
    r"""Adam (Alg. 8.7): debiased first moment over the root of the second, :math:`\delta` outside.

    .. math::
        t \leftarrow t + 1, \quad
        s \leftarrow \rho_1 s + (1 - \rho_1) g, \quad
        r \leftarrow \rho_2 r + (1 - \rho_2) g^2, \quad
        \hat s = \frac{s}{1 - \rho_1^t}, \quad \hat r = \frac{r}{1 - \rho_2^t}, \quad
        w \leftarrow w - \alpha \frac{\hat s}{\sqrt{\hat r} + \delta}

    (The seed document prints :math:`1 - \rho` and the gradient at :math:`w + \epsilon v`;
    both are errata, see MATH.md.) The step count is kept once for both corrections and
    the schedule (:func:`gbopt.with_step_count`).

    Args:
      learning_rate: :math:`\alpha`; 1e-3 in the book and PyTorch.
      b1: :math:`\rho_1` in [0, 1); 0.9 everywhere.
      b2: :math:`\rho_2` in [0, 1); 0.999 everywhere.
      eps: :math:`\delta` >= 0, **outside** the root; 1e-8 (book, PyTorch, optax with
        ``eps_root=0``); Keras uses 1e-7.

    Returns:
      ``with_step_count(lambda t: chain(divide(chain(ema(b1), bias_correction(b1, step=t)),
      chain(accumulate_square(b2), bias_correction(b2, step=t), sqrt(), add(eps))),
      scale_by_learning_rate(learning_rate, step=t)))``.

    Raises:
      ValueError: for a ``learning_rate`` or ``eps`` < 0, NaN or infinite, or ``b1`` or
        ``b2`` outside [0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      Goodfellow et al., Alg. 8.7.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps", eps)
    _validate.learning_rate(learning_rate)
    return with_step_count(
        lambda t: chain(
            divide(
                chain(ema(b1), bias_correction(b1, step=t)),
                chain(accumulate_square(b2), bias_correction(b2, step=t), sqrt(), add(eps)),
            ),
            scale_by_learning_rate(learning_rate, step=t),
        )
    )
