r"""The textbook's optimizers, each a single :func:`gbopt.chain` of primitives.

Every rule is the one in Goodfellow, Bengio & Courville, *Deep Learning*, ch. 8
(Algorithms 8.1-8.7); docs/rules.md states each rule and the misprints the textbook's
common summaries carry. Symbols:
:math:`\alpha` learning rate, :math:`g` the (minibatch) gradient, :math:`\mu` momentum,
:math:`\rho` decay, :math:`\delta` ``eps``, :math:`t` the 1-based step.

``learning_rate`` accepts a float, an array or a schedule ``count -> value`` everywhere.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from gbopt import _maps, _validate
from gbopt._base import GradientTransformation, ScalarOrSchedule, check_storage_dtype, named
from gbopt._combine import chain, divide, with_step_count
from gbopt._maps import add, bias_correction, identity, scale_by_learning_rate, sqrt
from gbopt._statistics import (
    accumulate_centered_square,
    accumulate_square,
    ema,
    nadam_momentum,
    trace,
)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    learning_rate_in_velocity: bool = True,
) -> GradientTransformation:
    r"""Gradient descent, SGD and minibatch SGD (Alg. 8.1), with optional momentum (8.2, 8.3).

    .. math:: w \leftarrow w - \alpha\, g

    The three differ only in the data the gradient is computed on: the whole set
    (gradient descent), one random example (SGD) or a random minibatch of :math:`B`
    examples, :math:`g = \frac{1}{B}\sum_i \nabla L_i` (minibatch SGD).

    With ``momentum`` it is :func:`momentum` (or :func:`nesterov` with ``nesterov=True``):
    :math:`v \leftarrow \mu v - \alpha g,\ w \leftarrow w + v`, the learning rate
    **inside** the velocity as in the book. ``optax.sgd(lr, momentum, nesterov)`` has the
    same signature and keeps :math:`\alpha` outside (:math:`b \leftarrow \mu b + g,\
    w \leftarrow w - \alpha_t b`): with a constant :math:`\alpha` the two are the same
    rule, under a schedule they differ; ``learning_rate_in_velocity=False`` is optax's
    rule step for step.

    Args:
      learning_rate: :math:`\alpha` (no default; PyTorch's is 1e-3).
      momentum: :math:`\mu` in [0, 1), or None (default) for plain SGD.
      nesterov: Nesterov's momentum (needs ``momentum`` in (0, 1)).
      accumulator_dtype: the storage dtype of the velocity (optax's name); None keeps
        it in the parameters' dtype, bfloat16 included, as optax does (a first moment
        follows the parameters; the arithmetic stays in at least float32).
      learning_rate_in_velocity: fold :math:`\alpha_t` into the velocity (the book,
        default) or multiply the buffer by it (``False``: optax's ``sgd``, PyTorch).

    Returns:
      ``chain(scale_by_learning_rate(learning_rate))``; with ``momentum``,
      ``chain(scale_by_learning_rate(learning_rate), trace(momentum, nesterov=nesterov))``
      (the two swapped with ``learning_rate_in_velocity=False``).

    Example:
      >>> import jax.numpy as jnp, gbopt
      >>> tx = gbopt.sgd(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([1.0, 1.0])}, state, params)
      >>> gbopt.apply_updates(params, updates)["w"]
      Array([ 0.9, -2.1], dtype=float32)

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, a ``momentum`` outside
        [0, 1), or ``nesterov=True`` without a ``momentum`` > 0, naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule), a flag
        that is not a bool, or an ``accumulator_dtype`` that is not a floating dtype.

    References:
      Robbins & Monro, 1951; Polyak, 1964; Nesterov, 1983; Goodfellow et al.,
      *Deep Learning*, Alg. 8.1-8.3.
    """
    _validate.flag("nesterov", nesterov)
    _validate.flag("learning_rate_in_velocity", learning_rate_in_velocity)
    check_storage_dtype("accumulator_dtype", accumulator_dtype)
    if momentum is None:
        if nesterov:
            raise ValueError(
                "`nesterov=True` needs a `momentum` (e.g. momentum=0.9); got momentum=None."
            )
        return named(
            "sgd", chain(scale_by_learning_rate(learning_rate)), learning_rate=learning_rate
        )
    _validate.decay_rate("momentum", momentum)
    if nesterov:
        _validate.nesterov_momentum("momentum", momentum)
    velocity = trace(momentum, nesterov=nesterov, dtype=accumulator_dtype)
    if learning_rate_in_velocity:
        tx = chain(scale_by_learning_rate(learning_rate), velocity)
    else:
        tx = chain(velocity, scale_by_learning_rate(learning_rate))
    return named("sgd", tx, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)


gd = sgd
"""Alias of :func:`sgd`: gradient descent is SGD on the whole data set."""


def momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array = 0.9,
    *,
    learning_rate_in_velocity: bool = True,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""SGD with momentum (Alg. 8.2), the learning rate inside the velocity.

    .. math::
        v \leftarrow \mu v - \alpha g, \qquad w \leftarrow w + v, \qquad v_0 = 0

    With a constant :math:`\alpha` this equals PyTorch's ``SGD(lr, momentum)`` and
    ``optax.sgd(lr, momentum)`` (which keep :math:`\alpha` outside the buffer); with a
    schedule it follows the book, and they do not (docs/conventions.md).

    With ``learning_rate_in_velocity=False`` the rule is optax's and PyTorch's,
    :math:`b \leftarrow \mu b + g;\ w \leftarrow w - \alpha_t b`:
    ``momentum(lr, mu, learning_rate_in_velocity=False)`` is ``optax.sgd(lr, mu)``, step
    for step, also under a schedule (PyTorch's ``SGD(lr, momentum=mu)`` is
    :func:`gbopt.pytorch.SGD`).

    Args:
      learning_rate: :math:`\alpha`.
      momentum: :math:`\mu` in [0, 1) (the book's :math:`\alpha`); 0.9 here and in optax's
        examples, 0 in PyTorch.
      learning_rate_in_velocity: fold :math:`\alpha_t` into the velocity (the textbook,
        default) or multiply the buffer by it (``False``: optax's ``sgd``, PyTorch).
      accumulator_dtype: storage dtype of the velocity (optax's ``sgd`` name), e.g.
        ``jnp.float32`` for bfloat16 parameters; None keeps the parameters' dtype
        (bfloat16 included: a first moment follows the parameters). The arithmetic
        stays in at least float32 either way.

    Returns:
      ``chain(scale_by_learning_rate(learning_rate), trace(momentum))``, or
      ``chain(trace(momentum), scale_by_learning_rate(learning_rate))`` with
      ``learning_rate_in_velocity=False``.

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, or ``momentum``
        outside [0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Polyak, 1964; Goodfellow et al., Alg. 8.2.
    """
    _validate.decay_rate("momentum", momentum)
    _validate.flag("learning_rate_in_velocity", learning_rate_in_velocity)
    check_storage_dtype("accumulator_dtype", accumulator_dtype)
    velocity = trace(momentum, dtype=accumulator_dtype)
    if not learning_rate_in_velocity:
        tx = chain(velocity, scale_by_learning_rate(learning_rate))
    else:
        tx = chain(scale_by_learning_rate(learning_rate), velocity)
    return named("momentum", tx, learning_rate=learning_rate, momentum=momentum)


def nesterov(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array = 0.9,
    *,
    learning_rate_in_velocity: bool = True,
    accumulator_dtype: Any = None,
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

    With ``learning_rate_in_velocity=False`` it is ``optax.sgd(lr, mu, nesterov=True)``
    and PyTorch's ``SGD(lr, momentum=mu, nesterov=True)``, step for step, also under a
    schedule (with a constant rate all three are the same).

    Args:
      learning_rate: :math:`\alpha`.
      momentum: :math:`\mu` in (0, 1).
      learning_rate_in_velocity: fold :math:`\alpha_t` into the velocity (the textbook,
        default) or multiply the buffer by it (``False``: optax's ``sgd``, PyTorch).
      accumulator_dtype: storage dtype of the velocity (optax's ``sgd`` name), e.g.
        ``jnp.float32`` for bfloat16 parameters; None keeps the parameters' dtype
        (bfloat16 included: a first moment follows the parameters). The arithmetic
        stays in at least float32 either way.

    Returns:
      ``chain(scale_by_learning_rate(learning_rate), trace(momentum, nesterov=True))``,
      the two swapped with ``learning_rate_in_velocity=False``.

    Raises:
      ValueError: for a ``learning_rate`` < 0, NaN or infinite, or ``momentum``
        outside (0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule).

    References:
      Nesterov, 1983; Sutskever et al., 2013; Goodfellow et al., Alg. 8.3.
    """
    _validate.decay_rate("momentum", momentum)
    _validate.nesterov_momentum("momentum", momentum)
    _validate.flag("learning_rate_in_velocity", learning_rate_in_velocity)
    check_storage_dtype("accumulator_dtype", accumulator_dtype)
    velocity = trace(momentum, nesterov=True, dtype=accumulator_dtype)
    if not learning_rate_in_velocity:
        tx = chain(velocity, scale_by_learning_rate(learning_rate))
    else:
        tx = chain(scale_by_learning_rate(learning_rate), velocity)
    return named("nesterov", tx, learning_rate=learning_rate, momentum=momentum)


def adagrad(
    learning_rate: ScalarOrSchedule,
    eps: float | jax.Array = 1e-7,
    *,
    initial_accumulator_value: float = 0.0,
    eps_in_sqrt: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    r"""AdaGrad (Alg. 8.4): divide by the root of the summed squares, :math:`\delta` outside.

    .. math::
        r \leftarrow r + g^2, \qquad w \leftarrow w - \frac{\alpha}{\delta + \sqrt{r}}\, g,
        \qquad r_0 = 0

    **optax's rule** is ``adagrad(lr, eps=1e-7, initial_accumulator_value=0.1,
    eps_in_sqrt=True)`` (optax's defaults):
    :math:`w \leftarrow w - \alpha\, g / \sqrt{r + \delta}` with :math:`r_0 = 0.1`.
    (optax also returns 0 where :math:`r = 0`; with ``eps > 0`` so does this rule.)
    PyTorch's ``Adagrad(lr, eps=δ)`` is the default rule here with its ``eps=1e-10``
    (:func:`gbopt.pytorch.Adagrad` adds ``lr_decay`` and weight decay).

    Args:
      learning_rate: :math:`\alpha`; PyTorch's default is 1e-2.
      eps: :math:`\delta` >= 0, **outside** the root. Default 1e-7 (the book's); PyTorch:
        1e-10 (outside); optax ``adagrad``: 1e-7 **inside** the root with
        :math:`r_0 = 0.1`.
      initial_accumulator_value: :math:`r_0` >= 0; 0 (book, PyTorch), 0.1 (optax).
        Keyword-only: ``optax.adagrad(lr, initial_accumulator_value, eps)`` takes it
        second, gbopt takes ``eps`` second (pass both by name to swap freely).
      eps_in_sqrt: put :math:`\delta` inside the root, :math:`\sqrt{r + \delta}` (optax).
      nu_dtype: storage dtype of :math:`r`, e.g. ``jnp.bfloat16``; None keeps the
        parameters' dtype, at least float32. The arithmetic stays in at least float32.

    Returns:
      ``chain(divide(identity(), chain(accumulate_square(initial_accumulator_value=r0),
      sqrt(), add(eps))), scale_by_learning_rate(learning_rate))``, with ``add(eps)``
      before ``sqrt()`` when ``eps_in_sqrt``.

    Raises:
      ValueError: for a ``learning_rate``, ``eps`` or ``initial_accumulator_value`` < 0,
        NaN or infinite, naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule), or an
        option that is not a bool.

    References:
      Duchi, Hazan & Singer, 2011; Goodfellow et al., Alg. 8.4.
    """
    _validate.non_negative("eps", eps)
    _validate.flag("eps_in_sqrt", eps_in_sqrt)
    check_storage_dtype("nu_dtype", nu_dtype)
    accumulated = accumulate_square(
        initial_accumulator_value=initial_accumulator_value, dtype=nu_dtype
    )
    root = chain(add(eps), sqrt()) if eps_in_sqrt else chain(sqrt(), add(eps))
    tx = chain(divide(identity(), chain(accumulated, root)), scale_by_learning_rate(learning_rate))
    return named("adagrad", tx, learning_rate=learning_rate, eps=eps)


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
    *,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | jax.Array | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    nu_dtype: Any = None,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""RMSProp (Alg. 8.5): scale by the root of a moving average of squares, :math:`\delta` inside.

    .. math::
        r \leftarrow \rho r + (1 - \rho) g^2, \qquad
        w \leftarrow w - \frac{\alpha}{\sqrt{\delta + r}}\, g, \qquad r_0 = 0

    The first step is :math:`\alpha / \sqrt{1 - \rho}` times the sign of :math:`g`
    (3.16 :math:`\alpha` at :math:`\rho = 0.9`).

    The keyword options are optax's, with optax's meaning: **optax's rule** is
    ``rmsprop(lr, decay, eps=1e-8, ...)`` with the same keywords as ``optax.rmsprop``
    (only the default ``eps`` differs: 1e-8 in optax). ``centered=True`` divides by the
    root of :math:`r - \bar g^2` (:func:`gbopt.accumulate_centered_square`, clamped at
    0); ``momentum`` adds a velocity *after* the learning rate (lr inside the velocity,
    as in the book's Alg. 8.6 and in optax; PyTorch puts it outside, see
    :func:`gbopt.pytorch.RMSprop`). ``bias_correction=True`` divides :math:`r` by
    :math:`1 - \rho^t` before the root, as optax does.

    Args:
      learning_rate: :math:`\alpha`; PyTorch's default is 1e-2.
      decay: :math:`\rho` in [0, 1); 0.9 (book, optax), PyTorch's ``alpha`` is 0.99.
      eps: :math:`\delta` >= 0, **inside** the root. Default 1e-6 (the book's); optax:
        1e-8 inside (``eps_in_sqrt=True``); PyTorch: 1e-8 **outside**.
      initial_scale: :math:`r_0` >= 0 (optax's name; 0 in the book, optax and PyTorch,
        1 in TensorFlow 1).
      eps_in_sqrt: :math:`\sqrt{r + \delta}` (default) or :math:`\sqrt{r} + \delta`
        (``False``, PyTorch's placement).
      centered: divide by the root of the estimated variance (Graves, 2013).
      momentum: :math:`\mu` in [0, 1), or None for no velocity.
      nesterov: Nesterov's form of the velocity (needs ``momentum``); ``rmsprop(lr, decay,
        eps, momentum=mu, nesterov=True)`` is :func:`rmsprop_nesterov`.
      bias_correction: use :math:`\hat r = r / (1 - \rho^t)` (optax's option; not with
        ``centered``, whose bias-corrected variance is not a correction of its output).
      nu_dtype: storage dtype of :math:`r` (and of :math:`\bar g` with ``centered``),
        e.g. ``jnp.bfloat16``; None keeps the parameters' dtype, at least float32. The
        arithmetic stays in at least float32.
      accumulator_dtype: storage dtype of the velocity (with ``momentum``); None keeps
        the parameters' dtype (bfloat16 for bfloat16 parameters: a first moment follows
        the parameters, docs/conventions.md).

    Returns:
      ``chain(divide(identity(), chain(accumulate_square(decay), add(eps), sqrt())),
      scale_by_learning_rate(learning_rate))``; with the options,
      ``accumulate_centered_square`` for ``centered``, ``sqrt()`` before ``add(eps)``
      when not ``eps_in_sqrt``, ``bias_correction(decay)`` after the statistic with
      ``bias_correction`` (in :func:`gbopt.with_step_count`), and
      ``trace(momentum, nesterov=nesterov)`` at the end.

    Raises:
      ValueError: for a ``learning_rate``, ``eps`` or ``initial_scale`` < 0, NaN or
        infinite, ``decay`` or ``momentum`` outside [0, 1), ``nesterov=True`` without
        a ``momentum`` > 0, or ``bias_correction`` with ``centered``, naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule), or an
        option that is not a bool.

    References:
      Tieleman & Hinton, Lecture 6.5, 2012; Graves, "Generating Sequences With
      Recurrent Neural Networks", 2013; Goodfellow et al., Alg. 8.5.
    """
    _validate.decay_rate("decay", decay)
    _validate.non_negative("eps", eps)
    _validate.non_negative("initial_scale", initial_scale)
    for name, flag in [
        ("eps_in_sqrt", eps_in_sqrt),
        ("centered", centered),
        ("nesterov", nesterov),
        ("bias_correction", bias_correction),
    ]:
        _validate.flag(name, flag)
    if centered and bias_correction:
        raise ValueError(
            "`bias_correction=True` is not available with `centered=True` in gbopt.rmsprop "
            "(the corrected variance r/(1-ρ^t) - |m/(1-ρ^t)|^2 is not a correction of the "
            "centered statistic); use one of the two, or optax.rmsprop for both."
        )
    if nesterov and momentum is None:
        raise ValueError(
            "`nesterov=True` needs a `momentum` (e.g. momentum=0.9); got momentum=None."
        )
    if momentum is not None:
        _validate.decay_rate("momentum", momentum)
        if nesterov:
            _validate.nesterov_momentum("momentum", momentum)
    check_storage_dtype("nu_dtype", nu_dtype)
    check_storage_dtype("accumulator_dtype", accumulator_dtype)
    if centered:
        second_moment = accumulate_centered_square(
            decay, initial_accumulator_value=initial_scale, dtype=nu_dtype
        )
    else:
        second_moment = accumulate_square(
            decay, initial_accumulator_value=initial_scale, dtype=nu_dtype
        )
    root = chain(add(eps), sqrt()) if eps_in_sqrt else chain(sqrt(), add(eps))
    if bias_correction:
        second_moment = chain(second_moment, _maps.bias_correction(decay))
    pieces = [
        divide(identity(), chain(second_moment, root)),
        scale_by_learning_rate(learning_rate),
    ]
    if momentum is not None:
        pieces.append(trace(momentum, nesterov=nesterov, dtype=accumulator_dtype))
    tx = with_step_count(chain(*pieces)) if bias_correction else chain(*pieces)
    return named(
        "rmsprop",
        tx,
        learning_rate=learning_rate,
        decay=decay,
        eps=eps,
        momentum=momentum,
    )


def rmsprop_nesterov(
    learning_rate: ScalarOrSchedule,
    decay: float | jax.Array = 0.9,
    momentum: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
    *,
    nu_dtype: Any = None,
    accumulator_dtype: Any = None,
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
      nu_dtype: storage dtype of :math:`r`, as in :func:`rmsprop`.
      accumulator_dtype: storage dtype of the velocity :math:`v`, as in :func:`rmsprop`.

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
    check_storage_dtype("nu_dtype", nu_dtype)
    check_storage_dtype("accumulator_dtype", accumulator_dtype)
    tx = chain(
        divide(identity(), chain(accumulate_square(decay, dtype=nu_dtype), add(eps), sqrt())),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov=True, dtype=accumulator_dtype),
    )
    return named(
        "rmsprop_nesterov",
        tx,
        learning_rate=learning_rate,
        decay=decay,
        momentum=momentum,
        eps=eps,
    )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> GradientTransformation:
    r"""Adam (Alg. 8.7): debiased first moment over the root of the second, :math:`\delta` outside.

    .. math::
        t \leftarrow t + 1, \quad
        s \leftarrow \rho_1 s + (1 - \rho_1) g, \quad
        r \leftarrow \rho_2 r + (1 - \rho_2) |g|^2, \quad
        \hat s = \frac{s}{1 - \rho_1^t}, \quad \hat r = \frac{r}{1 - \rho_2^t}, \quad
        w \leftarrow w - \alpha \frac{\hat s}{\sqrt{\hat r + \epsilon_{root}} + \delta}

    (Summaries of the book sometimes print :math:`1 - \rho` for the correction, or take
    the gradient at :math:`w + \mu v`; both are misprints, see docs/rules.md.) The
    step count is kept once for both corrections and the schedule
    (:func:`gbopt.with_step_count`). The signature and defaults are ``optax.adam``'s, and
    so is the rule (the book's is ``eps_root=0``); for complex parameters :math:`r` is
    real (:math:`|g|^2 = g \bar g`), as in optax.

    With ``nesterov=True`` (NAdam as optax has it, ``optax.nadam``) the numerator is
    :math:`\rho_1 s_t / (1 - \rho_1^{t+1}) + (1 - \rho_1) g_t / (1 - \rho_1^t)`
    (:func:`gbopt.nadam_momentum` with a constant momentum); PyTorch's ``NAdam`` adds
    Dozat's momentum schedule (:func:`gbopt.pytorch.NAdam`).

    Args:
      learning_rate: :math:`\alpha`; 1e-3 in the book and PyTorch.
      b1: :math:`\rho_1` in [0, 1); 0.9 everywhere.
      b2: :math:`\rho_2` in [0, 1); 0.999 everywhere.
      eps: :math:`\delta` >= 0, **outside** the root; 1e-8 (book, PyTorch, optax);
        Keras uses 1e-7.
      eps_root: :math:`\epsilon_{root}` >= 0, **inside** the root (optax's). The default
        None means 0, the book's rule (optax writes 0.0; None keeps it out of
        :func:`gbopt.inject_hyperparams`' state unless it is given, so states saved
        before it existed still restore). A positive value keeps the gradient of the
        update finite when differentiating through it (meta-learning).
      mu_dtype: the storage dtype of :math:`s` (optax's name). None keeps it in the
        parameters' dtype, bfloat16 included, as optax does (a first moment follows the
        parameters; :math:`r` stays in at least float32, unlike optax's, see
        ``nu_dtype``). A real dtype for complex parameters stores the real and imaginary
        parts of :math:`s` (optax drops the imaginary part).
      nesterov: NAdam's numerator (above), as ``optax.adam(..., nesterov=True)``.
      nu_dtype: the storage dtype of :math:`r` (not in optax): e.g. ``jnp.bfloat16`` to
        halve its memory; it is still computed in at least float32. None: the
        parameters' dtype, at least float32 (a bfloat16 :math:`r` stops moving once
        :math:`(1 - \rho_2) < 2^{-9}` of it is below half an ulp).

    Returns:
      ``with_step_count(chain(divide(chain(ema(b1), bias_correction(b1)),
      chain(accumulate_square(b2), bias_correction(b2), add(eps_root), sqrt(),
      add(eps))), scale_by_learning_rate(learning_rate)))``, with
      ``nadam_momentum(b1, math.inf)`` for the numerator when ``nesterov``.

    Raises:
      ValueError: for a ``learning_rate``, ``eps`` or ``eps_root`` < 0, NaN or infinite,
        or ``b1`` or ``b2`` outside [0, 1), naming the argument.
      TypeError: for a hyperparameter that is not a real number (or a schedule), a
        ``nesterov`` that is not a bool, or a storage dtype that is not a floating dtype.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop;
      Goodfellow et al., Alg. 8.7.
    """
    _validate.decay_rate("b1", b1)
    _validate.decay_rate("b2", b2)
    _validate.non_negative("eps", eps)
    eps_root = 0.0 if eps_root is None else eps_root
    _validate.non_negative("eps_root", eps_root)
    _validate.learning_rate(learning_rate)
    _validate.flag("nesterov", nesterov)
    check_storage_dtype("mu_dtype", mu_dtype)
    check_storage_dtype("nu_dtype", nu_dtype)
    if nesterov:
        numerator = nadam_momentum(b1, math.inf, dtype=mu_dtype)
    else:
        numerator = chain(ema(b1, dtype=mu_dtype), bias_correction(b1))
    # add(eps_root) is there also for eps_root=0 (adding 0 to r >= 0 changes no bit): a
    # state of the same structure whether eps_root is a number or injected as an array.
    tx = with_step_count(
        chain(
            divide(
                numerator,
                chain(
                    accumulate_square(b2, dtype=nu_dtype),
                    bias_correction(b2),
                    add(eps_root),
                    sqrt(),
                    add(eps),
                ),
            ),
            scale_by_learning_rate(learning_rate),
        )
    )
    return named(
        "adam",
        tx,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        eps_root=eps_root,
        nesterov=nesterov,
    )
