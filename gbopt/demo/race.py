"""The race behind ``python -m gbopt``: every textbook optimizer on the built-in problems.

One run trains one optimizer on one problem. Its training loop is a ``jax.lax.scan``
compiled once (ahead of time, so that the compile is not timed) and called on chunks of
up to :data:`MAX_CHUNK` steps, so that hundreds of steps cost one call and a progress bar
can move between calls. The learning rate is an argument of the compiled loop (a traced
array), so a new rate needs no new compile.

At every step the loop records the loss at the current parameters (and, on the 2-D
surfaces, the parameters themselves); run ``steps`` steps and you get ``steps + 1``
losses, the first at the start and the last after the final update. On a stochastic
problem the minibatches' indices are drawn once per run, before the loop, and scanned
over (random numbers inside the loop body would double its compile time).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from gbopt import _textbook as _optimizers
from gbopt._update import apply_updates
from gbopt.demo.problems import INSTALL_HINT, MissingDependencyError, Problem

OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "sgd": _optimizers.sgd,
    "momentum": _optimizers.momentum,
    "nesterov": _optimizers.nesterov,
    "adagrad": _optimizers.adagrad,
    "rmsprop": _optimizers.rmsprop,
    "rmsprop_nesterov": _optimizers.rmsprop_nesterov,
    "adam": _optimizers.adam,
}
"""Every textbook optimizer, by name: ``learning_rate -> transform``, other defaults kept."""


def _muon(learning_rate):
    from gbopt._matrix_optimizers import muon

    return muon(learning_rate, adam_learning_rate=3e-3)  # AdamW's rate for the rest


def _shampoo(learning_rate):
    from gbopt._matrix_optimizers import shampoo

    return shampoo(learning_rate)


def _soap(learning_rate):
    from gbopt._matrix_optimizers import soap

    return soap(learning_rate)


MATRIX_OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "muon": _muon,
    "shampoo": _shampoo,
    "soap": _soap,
}
"""The matrix-aware optimizers (run on the problems that tune a rate for them)."""

ALL_OPTIMIZERS = {**OPTIMIZERS, **MATRIX_OPTIMIZERS}

MAX_CHUNK = 1000
"""The most steps one call of a compiled loop runs."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one optimizer did on one problem.

    Attributes:
      optimizer: the optimizer's name (a key of :data:`OPTIMIZERS`).
      learning_rate: the learning rate it ran with.
      losses: ``(steps + 1,)`` losses, before the first step and after each step.
      path: ``(steps + 1, 2)`` parameters on the 2-D surfaces, else ``None``.
      steps_to_tolerance: the first step count at which the problem's tolerance was
        reached, or ``None``.
      seconds_per_step: wall time per step of the compiled loop, compile excluded (the
        loss recorded at every step included: on ``digits``, a pass over the whole set).
      compile_seconds: the time taken to compile the loop.
    """

    optimizer: str
    learning_rate: float
    losses: np.ndarray
    path: np.ndarray | None
    steps_to_tolerance: int | None
    seconds_per_step: float
    compile_seconds: float

    @property
    def final_loss(self) -> float:
        """The loss after the last step."""
        return float(self.losses[-1])


def _chunks(steps: int) -> tuple[int, int]:
    """Splits the ``steps + 1`` recorded iterations into ``(n, length)`` equal chunks."""
    n = math.ceil((steps + 1) / MAX_CHUNK)
    return n, math.ceil((steps + 1) / n)


def _make_loop(problem: Problem, optimizer: str, length: int) -> Callable:
    """The training loop: ``(carry, learning_rate, indices) -> (carry, records)``.

    ``indices`` is ``(length, batch_size)`` minibatch indices on a stochastic problem,
    else ``None``.
    """
    make = ALL_OPTIMIZERS[optimizer]

    def loop(carry, learning_rate, indices):
        tx = make(learning_rate)

        def step(carry, batch):
            params, state = carry
            if problem.stochastic:
                value = problem.loss(params)
                grads = jax.grad(problem.batch_loss)(params, batch)
            else:
                value, grads = jax.value_and_grad(problem.loss)(params)
            updates, state = tx.update(grads, state, params)
            record = (value, params) if problem.is_2d else (value, None)
            return (apply_updates(params, updates), state), record

        return jax.lax.scan(step, carry, indices, length=length)

    return loop


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw_indices(key: jax.Array, shape: tuple[int, ...], examples: int) -> jax.Array:
    """Minibatch indices drawn with replacement from ``range(examples)``."""
    return jax.random.randint(key, shape, 0, examples, dtype=jnp.int32)


def run(
    problem: Problem,
    optimizer: str,
    *,
    steps: int | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    on_progress: Callable[[int], Any] | None = None,
) -> RunResult:
    """Trains ``optimizer`` on ``problem`` and records its losses.

    Args:
      problem: the problem.
      optimizer: a key of :data:`OPTIMIZERS`.
      steps: the number of updates (default: the problem's).
      learning_rate: default: the problem's tuned rate for this optimizer.
      seed: seeds the initial parameters and the minibatches.
      on_progress: called with the number of steps done after each compiled call.

    Returns:
      The :class:`RunResult`.
    """
    steps = problem.steps if steps is None else steps
    lr = problem.learning_rates[optimizer] if learning_rate is None else learning_rate
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params = problem.init(init_key)
    carry = (params, ALL_OPTIMIZERS[optimizer](lr).init(params))
    lr_array = jnp.asarray(lr, jnp.float32)

    n_chunks, length = _chunks(steps)
    if problem.stochastic:
        shape = (n_chunks, length, problem.batch_size)
        indices = _draw_indices(data_key, shape, problem.examples)
    else:
        indices = [None] * n_chunks
    start = time.perf_counter()
    loop = jax.jit(_make_loop(problem, optimizer, length))
    compiled = loop.lower(carry, lr_array, indices[0]).compile()
    compile_seconds = time.perf_counter() - start

    values, points, elapsed, done = [], [], 0.0, 0
    for i in range(n_chunks):
        start = time.perf_counter()
        carry, (value, point) = compiled(carry, lr_array, indices[i])
        jax.block_until_ready(value)
        elapsed += time.perf_counter() - start
        values.append(np.asarray(value))
        points.append(None if point is None else np.asarray(point))
        if on_progress is not None:
            on_progress(min(length, steps - done))
        done = min(done + length, steps)

    losses = np.concatenate(values)[: steps + 1].astype(np.float64)
    path = None if points[0] is None else np.concatenate(points)[: steps + 1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        reached = np.flatnonzero(problem.gap(losses) <= problem.tolerance)
    return RunResult(
        optimizer=optimizer,
        learning_rate=float(lr),
        losses=losses,
        path=path,
        steps_to_tolerance=int(reached[0]) if reached.size else None,
        seconds_per_step=elapsed / (n_chunks * length),
        compile_seconds=compile_seconds,
    )


def _seconds(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    return f"{t * 1e3:.2f} ms"


def _loss(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else f"{x} (diverged)"


def describe(problem: Problem, steps: int, initial_loss: float) -> str:
    """Two lines on a problem: its objective, start, minimum and tolerance."""
    head = f"## {problem.name}: {problem.title}, {problem.formula}"
    start = f"initial loss {initial_loss:.4g}"
    if problem.minimum is not None:
        where = ", ".join(f"({x:g}, {y:g})" for x, y in problem.minimizers)
        detail = (
            f"minimum f* = {problem.minimum:g} at {where}; "
            f"reached when loss - f* <= {problem.tolerance:g}"
        )
    else:
        detail = f"reached when loss <= {problem.tolerance:g}"
    if problem.stochastic:
        run = f"{steps} steps on random minibatches of {problem.batch_size} (loss on the whole set)"
    elif problem.examples is not None:
        run = f"{steps} steps on the whole set of {problem.examples} (full batch)"
    else:
        run = f"{steps} steps"
    return f"{head}\n{run}; {start}; {detail}"


def format_table(problem: Problem, results: Sequence[RunResult]) -> str:
    """The race's results on one problem as a markdown table."""
    gap_column = problem.minimum is not None
    header = ["optimizer", "learning rate", "final loss"]
    header += ["loss - f*"] if gap_column else []
    header += ["steps to tolerance", "time / step"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|:--" + "|--:" * (len(header) - 1) + "|",
    ]
    for r in results:
        row = [r.optimizer, f"{r.learning_rate:g}", _loss(r.final_loss)]
        if gap_column:
            row.append(f"{problem.gap(r.final_loss):.3g}")
        row.append("-" if r.steps_to_tolerance is None else str(r.steps_to_tolerance))
        row.append(_seconds(r.seconds_per_step))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _color(optimizer: str) -> str:
    return f"C{list(ALL_OPTIMIZERS).index(optimizer) % 10}"


def plot_losses(problem: Problem, results: Sequence[RunResult], path: Path) -> Path:
    """Saves the loss curves of one problem (log scale) as a PNG file."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for r in results:
        gap = problem.gap(r.losses)
        ax.plot(np.arange(gap.size), gap, color=_color(r.optimizer), lw=1.4, label=r.optimizer)
    ax.axhline(
        problem.tolerance, color="k", ls="--", lw=0.8, label=f"tolerance {problem.tolerance:g}"
    )
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("step")
    ax.set_ylabel("loss" if problem.minimum is None else "loss - f*")
    ax.set_title(f"{problem.title}: loss against steps")
    fig.legend(loc="outside right upper", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def plot_paths(problem: Problem, results: Sequence[RunResult], path: Path) -> Path:
    """Saves the paths of the optimizers over the contours of a 2-D problem as a PNG file."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    (x0, x1), (y0, y1) = problem.bounds
    xs, ys = np.linspace(x0, x1, 241), np.linspace(y0, y1, 241)
    grid = jnp.asarray(np.stack(np.meshgrid(xs, ys), axis=-1), jnp.float32)
    surface = np.asarray(jax.vmap(jax.vmap(problem.loss))(grid), np.float64)
    gap = problem.gap(surface)
    low = max(float(np.min(gap[gap > 0])), 1e-3)
    gap = np.maximum(gap, low)  # the minimum itself, 0 on a log scale
    levels = np.geomspace(low, float(np.max(gap)), 18)

    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ax.contour(xs, ys, gap, levels=levels, norm=LogNorm(), cmap="Greys_r", linewidths=0.6)
    for r in results:
        ax.plot(r.path[:, 0], r.path[:, 1], color=_color(r.optimizer), lw=1.3, label=r.optimizer)
    start = results[0].path[0]
    ax.plot(*start, "o", color="k", ms=6, label="start")
    mins = np.array(problem.minimizers)
    ax.plot(mins[:, 0], mins[:, 1], "*", color="gold", mec="k", ms=13, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{problem.title}: paths of the optimizers")
    fig.legend(loc="outside right upper", fontsize="small")
    fig.savefig(path, dpi=110)
    return path


def _progress_bar(total: int, problem: str, stream: IO[str]):
    """A tqdm bar that appears only if the runs on a problem last more than a second.

    Returns ``None`` when tqdm is not installed.
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=problem, unit="step", delay=1.0, file=stream, leave=False)


def race(
    problem_names: Sequence[str],
    optimizers: Sequence[str],
    *,
    make_problem: Callable[[str], Problem],
    steps: int | None,
    learning_rate: float | None,
    seed: int,
    out: Path,
    skip_missing: bool,
    stdout: IO[str],
    stderr: IO[str],
) -> int:
    """Races ``optimizers`` on each problem, prints the tables and writes the plots.

    Args:
      problem_names: the problems to run, in order.
      optimizers: the optimizers, keys of :data:`OPTIMIZERS`.
      make_problem: builds a problem from its name.
      steps: steps per run (default: each problem's).
      learning_rate: one rate for every optimizer (default: the tuned rates).
      seed: seeds parameters and minibatches.
      out: the folder the plots are written to (created if needed).
      skip_missing: skip, with a note, a problem whose optional dependency is missing
        (else report it as an error).
      stdout: where the tables go.
      stderr: where notes, errors and the progress bar go.

    Returns:
      The exit status: 0, or 1 when a requested problem cannot run.
    """
    problems = []
    for name in problem_names:
        try:
            problems.append(make_problem(name))
        except MissingDependencyError as e:
            if not skip_missing:
                print(f"gbopt: error: {e}", file=stderr)
                return 1
            print(f"gbopt: note: skipping {name}: {e}", file=stderr)

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plots = False
        print(
            f"gbopt: note: plots skipped, they need matplotlib; install it with: {INSTALL_HINT}",
            file=stderr,
        )
    else:
        plots = True

    lr_note = (
        f"learning rate {learning_rate:g} for every optimizer"
        if learning_rate is not None
        else "tuned learning rates"
    )
    device = jax.devices()[0].platform
    print(
        f"# gbopt race: {len(optimizers)} optimizers on {len(problems)} problems "
        f"(seed {seed}, {lr_note}; JAX {jax.__version__} on {device})",
        file=stdout,
    )

    written, compile_seconds = [], 0.0
    for problem in problems:
        n = steps or problem.steps
        # without one rate for all, an optimizer runs where the problem tunes a rate for it
        names = [o for o in optimizers if learning_rate is not None or o in problem.learning_rates]
        bar = _progress_bar(n * len(names), problem.name, stderr)
        results = []
        try:
            for name in names:
                result = run(
                    problem,
                    name,
                    steps=n,
                    learning_rate=learning_rate,
                    seed=seed,
                    on_progress=None if bar is None else bar.update,
                )
                compile_seconds += result.compile_seconds
                results.append(result)
        finally:
            if bar is not None:
                bar.close()  # clears its line before the table is printed
        print(
            f"\n{describe(problem, n, results[0].losses[0])}\n\n{format_table(problem, results)}",
            file=stdout,
        )
        if plots:
            out.mkdir(parents=True, exist_ok=True)
            written.append(plot_losses(problem, results, out / f"{problem.name}_loss.png"))
            if problem.is_2d:
                written.append(plot_paths(problem, results, out / f"{problem.name}_paths.png"))

    runs = len(problems) * len(optimizers)
    print(
        f"\nCompiled {runs} training loops in {compile_seconds:.1f} s (not in the times per step).",
        file=stdout,
    )
    if written:
        names = ", ".join(p.name for p in written)
        print(f"Plots ({len(written)} PNG files) written to {out.resolve()}: {names}", file=stdout)
    return 0
