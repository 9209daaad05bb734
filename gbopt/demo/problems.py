r"""The built-in problems of the main job (``python -m gbopt``): three surfaces and a classifier.

Each :class:`Problem` carries what a race needs: seeded initial parameters, the loss,
a learning rate tuned for each textbook optimizer, the number of steps to run and a
tolerance for "steps to reach". The surfaces are two-dimensional (the parameters are one
array of shape ``(2,)``) so that their paths can be drawn:

* ``rosenbrock``: :math:`f(x, y) = (1 - x)^2 + 100 (y - x^2)^2`, a curved, flat-bottomed
  valley (Rosenbrock, 1960); minimum 0 at :math:`(1, 1)`.
* ``quadratic``: :math:`f(x, y) = \tfrac12 (x^2 + 50 y^2)` rotated by 30°, a narrow
  straight valley of condition number 50 that is not aligned with the axes (so the
  per-coordinate scaling of AdaGrad, RMSProp and Adam cannot undo it); minimum 0 at 0.
* ``saddle``: :math:`f(x, y) = x^2 - y^2 + \tfrac12 y^4`, a saddle point at the origin
  between two minima :math:`-\tfrac12` at :math:`(0, \pm 1)`; the run starts just off the
  ridge, where the gradient across it is tiny.

and ``digits`` is a classifier: a one-hidden-layer MLP (64 - 32 tanh - 10 softmax) trained
with the cross-entropy on the 1,797 handwritten digits that ship inside scikit-learn
(``sklearn.datasets.load_digits``; nothing is downloaded), on random minibatches. Its
loss is recorded on the whole training set at every step.

The surfaces start from fixed, classic points (the textbook does not move them); the textbook
draws the classifier's initial weights and its minibatches.

The learning rates were tuned with a log-spaced sweep (one vmapped run per optimizer, as
in ``notebooks/05_learning_rate_sweeps.ipynb``): each is the largest rate on the grid,
stepped down once for robustness, that reaches the tolerance in the fewest steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INSTALL_HINT = 'pip install "gbopt[notebooks]"'


class MissingDependencyError(ImportError):
    """A problem or a plot needs an optional package that is not installed."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """A minimization problem for the race.

    Attributes:
      name: the name ``--problem`` takes.
      title: a short human title for tables and plots.
      formula: the objective in plain text (Unicode).
      init: ``init(key) -> params``.
      loss: ``loss(params) -> scalar``, the objective that is recorded and plotted.
      learning_rates: the tuned learning rate of each textbook optimizer.
      steps: the default number of steps.
      tolerance: a run has *reached* the tolerance at the first step where
        ``loss - minimum <= tolerance`` (``loss <= tolerance`` when the minimum is unknown).
      minimum: the minimum value :math:`f^*`, when it is known.
      minimizers: the points where it is attained (2-D problems), for the plots.
      bounds: ``((x_min, x_max), (y_min, y_max))``, the window the paths are drawn in
        (2-D problems only).
      batch_loss: ``batch_loss(params, indices) -> scalar``, the loss on the examples
        ``indices`` (an int array of shape ``(batch_size,)``), for stochastic problems: its
        gradient on random minibatches drives the optimizer.
      examples: the number of training examples (data problems).
      batch_size: the minibatch size :math:`B` of stochastic problems.
    """

    name: str
    title: str
    formula: str
    init: Callable[[jax.Array], Any]
    loss: Callable[[Any], jax.Array]
    learning_rates: Mapping[str, float]
    steps: int
    tolerance: float
    minimum: float | None = None
    minimizers: tuple[tuple[float, float], ...] = ()
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None
    batch_loss: Callable[[Any, jax.Array], jax.Array] | None = None
    examples: int | None = None
    batch_size: int | None = None

    @property
    def is_2d(self) -> bool:
        """Whether the parameters are a point of the plane (paths can be drawn)."""
        return self.bounds is not None

    @property
    def stochastic(self) -> bool:
        """Whether the gradient is taken on random minibatches."""
        return self.batch_loss is not None

    def gap(self, loss: Any) -> Any:
        """``loss - minimum`` (the loss itself when the minimum is unknown)."""
        return loss if self.minimum is None else loss - self.minimum


def _fixed_start(x: float, y: float) -> Callable[[jax.Array], jax.Array]:
    def init(key):
        del key  # the surfaces start from their classic points
        return jnp.array([x, y], jnp.float32)

    return init


def rosenbrock() -> Problem:
    """Rosenbrock's banana valley, started at the classic point (-1.2, 1)."""

    def loss(w):
        x, y = w[0], w[1]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    return Problem(
        name="rosenbrock",
        title="Rosenbrock",
        formula="(1 - x)^2 + 100 (y - x^2)^2",
        init=_fixed_start(-1.2, 1.0),
        loss=loss,
        learning_rates={
            "sgd": 2e-3,
            "momentum": 2e-3,
            "nesterov": 1e-3,
            "adagrad": 1.0,
            "rmsprop": 5e-3,
            "rmsprop_nesterov": 1e-3,
            "adam": 0.2,
        },
        steps=2000,
        tolerance=1e-3,
        minimum=0.0,
        minimizers=((1.0, 1.0),),
        bounds=((-2.0, 2.0), (-1.0, 3.0)),
    )


_CONDITION = 50.0
_ANGLE = math.pi / 6


def quadratic() -> Problem:
    """An ill-conditioned quadratic: a narrow valley of condition number 50, rotated 30°."""
    c, s = math.cos(_ANGLE), math.sin(_ANGLE)
    rotation = np.array([[c, -s], [s, c]])
    hessian = rotation @ np.diag([1.0, _CONDITION]) @ rotation.T
    h = jnp.asarray(hessian, jnp.float32)

    def loss(w):
        return 0.5 * w @ (h @ w)

    return Problem(
        name="quadratic",
        title="Ill-conditioned quadratic",
        formula="1/2 w^T H w, H = R diag(1, 50) R^T, R a rotation by 30 degrees",
        init=_fixed_start(-4.0, 1.0),
        loss=loss,
        learning_rates={
            "sgd": 0.02,
            "momentum": 2e-3,
            "nesterov": 0.01,
            "adagrad": 2.0,
            "rmsprop": 0.02,
            "rmsprop_nesterov": 2e-3,
            "adam": 2.0,
        },
        steps=300,
        tolerance=1e-4,
        minimum=0.0,
        minimizers=((0.0, 0.0),),
        bounds=((-5.0, 5.0), (-3.0, 3.0)),
    )


def saddle() -> Problem:
    """A saddle between two minima, started just off the ridge."""

    def loss(w):
        x, y = w[0], w[1]
        return x**2 - y**2 + 0.5 * y**4

    return Problem(
        name="saddle",
        title="Saddle",
        formula="x^2 - y^2 + y^4 / 2",
        init=_fixed_start(-1.5, 1e-3),
        loss=loss,
        learning_rates={
            "sgd": 0.2,
            "momentum": 0.05,
            "nesterov": 0.2,
            "adagrad": 1.0,
            "rmsprop": 0.02,
            "rmsprop_nesterov": 0.01,
            "adam": 0.1,
        },
        steps=300,
        tolerance=1e-4,
        minimum=-0.5,
        minimizers=((0.0, 1.0), (0.0, -1.0)),
        bounds=((-2.0, 2.0), (-1.6, 1.6)),
    )


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The handwritten digits of scikit-learn: features in [0, 1] (float32), labels (int32).

    Raises:
      MissingDependencyError: if scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as e:
        raise MissingDependencyError(
            "the digits problem needs scikit-learn (its handwritten digits ship inside it); "
            f"install it with: {INSTALL_HINT}"
        ) from e
    x, y = sklearn_load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int32)


def mlp_init(key: jax.Array, sizes: tuple[int, ...] = (64, 32, 10)) -> dict:
    """Glorot-normal weights and zero biases for a tanh MLP with the given layer sizes."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        key, sub = jax.random.split(key)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        params[f"layer{i}"] = {
            "w": std * jax.random.normal(sub, (fan_in, fan_out), jnp.float32),
            "b": jnp.zeros((fan_out,), jnp.float32),
        }
    return params


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
    """The logits of the tanh MLP built by :func:`mlp_init`."""
    layers = [params[k] for k in sorted(params)]
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The mean softmax cross-entropy of integer ``labels``."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def digits(batch_size: int = 64) -> Problem:
    """A tanh MLP on scikit-learn's handwritten digits, trained on random minibatches.

    Args:
      batch_size: the minibatch size :math:`B` (drawn with replacement at every step);
        ``0`` trains on the whole set (gradient descent).

    Raises:
      ValueError: for a negative ``batch_size``.
      MissingDependencyError: if scikit-learn is not installed.
    """
    if batch_size < 0:
        raise ValueError(f"`batch_size` must be >= 0 (0 for the whole set), got {batch_size}.")
    x_np, y_np = load_digits()
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    n = x.shape[0]

    def loss(params):
        return cross_entropy(mlp_apply(params, x), y)

    def batch_loss(params, indices):
        return cross_entropy(mlp_apply(params, x[indices]), y[indices])

    full = batch_size == 0
    return Problem(
        name="digits",
        title="Digits MLP",
        formula=f"cross-entropy of a 64-32-10 tanh MLP on {n} 8x8 images",
        init=mlp_init,
        loss=loss,
        learning_rates={
            "sgd": 1.0,
            "momentum": 0.5,
            "nesterov": 0.5,
            "adagrad": 0.2,
            "rmsprop": 0.02,
            "rmsprop_nesterov": 5e-3,
            "adam": 0.05,
        },
        steps=500,
        tolerance=0.05,
        batch_loss=None if full else batch_loss,
        examples=n,
        batch_size=None if full else batch_size,
    )


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "rosenbrock": rosenbrock,
    "quadratic": quadratic,
    "saddle": saddle,
    "digits": digits,
}
"""Every built-in problem, by name, in the order the race runs them."""

SUMMARIES: dict[str, str] = {
    "rosenbrock": "(1 - x)^2 + 100 (y - x^2)^2 from (-1.2, 1): a curved valley",
    "quadratic": "1/2 w^T H w, condition number 50, rotated 30 degrees: a narrow valley",
    "saddle": "x^2 - y^2 + y^4 / 2 from (-1.5, 0.001): escape a saddle to a minimum",
    "digits": "a 64-32-10 MLP on scikit-learn's 1,797 handwritten digits, on minibatches",
}
"""One line on each problem, for ``--help`` (without building the problems)."""


def charlm(batch_size: int = 16) -> Problem:
    """A small character-level transformer on the standard library's source (gbopt.demo.charlm).

    The model (2 layers, width 64, context 64, 136,448 parameters) reads bytes of
    the standard library's ``.py`` files (200 kB, the last 10 % held out); the recorded
    loss is the validation cross-entropy (nats per byte) on 16 fixed held-out windows;
    the gradient is taken on ``batch_size`` random training windows. Not part of the
    default race (``python -m gbopt --problem charlm``); its optimizers are AdamW, Muon,
    Shampoo and SOAP. The tolerance is a validation loss of 2.6 nats per byte.

    Args:
      batch_size: the number of windows per step.
    """
    from gbopt.demo import charlm as lm

    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1 for charlm, got {batch_size}.")
    config = lm.CharLMConfig(seq_len=64, d_model=64, n_layers=2, n_heads=4)
    corpus = lm.load_corpus(200_000, seed=0)
    train = jnp.asarray(corpus.train)
    valid = lm.eval_batch(corpus.valid, config.seq_len, 16)
    offsets = jnp.arange(config.seq_len + 1)

    def loss(params):
        return lm.loss(params, valid, config)

    def batch_loss(params, indices):
        window = train[indices[:, None] + offsets].astype(jnp.int32)
        return lm.loss(params, {"inputs": window[:, :-1], "targets": window[:, 1:]}, config)

    return Problem(
        name="charlm",
        title="Char LM",
        formula="next-byte cross-entropy of a 2-layer transformer on Python's stdlib source",
        init=lambda key: lm.init_params(key, config),
        loss=loss,
        learning_rates={"adam": 3e-3, "muon": 0.02, "shampoo": 3e-3, "soap": 3e-3},
        steps=150,
        tolerance=2.6,
        examples=int(train.shape[0]) - config.seq_len - 1,
        batch_loss=batch_loss,
        batch_size=batch_size,
    )


EXTRA_PROBLEMS: dict[str, Callable[..., Problem]] = {"charlm": charlm}
"""Problems run only when named (``--problem charlm``): they train a model."""

EXTRA_SUMMARIES: dict[str, str] = {
    "charlm": "a small transformer LM on Python's own source (AdamW, Muon, Shampoo, SOAP)",
}
