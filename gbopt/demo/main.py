"""The main job: ``python -m gbopt`` races every optimizer on built-in problems.

With no arguments it runs all of them on every problem with tuned learning rates, prints
a markdown table per problem (optimizer, final loss, steps to reach a tolerance, time
per step) and writes loss curves and paths on the 2-D surfaces as PNG files to
``gbopt-out/``. ``python -m gbopt --help`` lists the options, problems and optimizers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gbopt.demo import problems as _problems
from gbopt.demo import race as _race

DEFAULT_OUT = "gbopt-out"
_BATCH_SIZE = 64


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-3, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


_SEED_MAX = 2**32 - 1


def _seed(text: str) -> int:
    """An argparse type: a seed for ``jax.random.key``, a whole number in [0, 2**32)."""
    value = _int_at_least(0)(text)
    if value > _SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to {_SEED_MAX} (2**32 - 1), got {value}"
        )
    return value


def _names(
    parser: argparse.ArgumentParser, given: Sequence[str] | None, valid: Sequence[str], what: str
):
    """Splits ``given`` (space- or comma-separated) into known names; ``all`` means every one."""
    if given is None:
        return list(valid)
    if not any(item.replace(",", " ").split() for item in given):
        parser.error(
            f"--{what}{'s' if what == 'optimizer' else ''} got no name; valid {what}s: "
            f"{', '.join(valid)} (or all, or leave the option out)"
        )
    names = []
    for item in given:
        for name in item.replace(",", " ").split():
            name = name.strip().lower()
            chosen = list(valid) if name == "all" else [name]
            if name != "all" and name not in valid:
                parser.error(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)} (or all)")
            names += [n for n in chosen if n not in names]
    return names


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (and exit status 2)."""

    def error(self, message: str):  # noqa: D102 (argparse's)
        self.exit(2, f"{self.prog}: error: {message} (see python -m gbopt --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m gbopt``."""
    summaries = {**_problems.SUMMARIES, **_problems.EXTRA_SUMMARIES}
    problems = "\n".join(f"  {name:<12}{doc}" for name, doc in summaries.items())
    parser = _Parser(
        prog="python -m gbopt",
        description=(
            "Race the optimizers of gbopt on built-in problems: print a table per problem\n"
            "(final loss, steps to reach a tolerance, time per step after compilation) and\n"
            "write loss curves and paths on the 2-D surfaces as PNG files."
        ),
        epilog=(
            f"problems:\n{problems}\n\noptimizers:\n  {', '.join(_race.ALL_OPTIMIZERS)}\n\n"
            "examples:\n"
            "  python -m gbopt\n"
            "  python -m gbopt --problem rosenbrock --optimizers momentum,nesterov --steps 500\n"
            "  python -m gbopt --problem digits --batch-size 0 --learning-rate 0.1\n\n"
            "Plots and the digits problem need matplotlib and scikit-learn:\n"
            f"  {_problems.INSTALL_HINT}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--problem",
        nargs="+",
        metavar="NAME",
        help="problems to run, space- or comma-separated (default: all)",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        metavar="NAME",
        help="optimizers to race, space- or comma-separated (default: all)",
    )
    parser.add_argument(
        "--steps",
        type=_int_at_least(1),
        metavar="N",
        help="steps per run (default: each problem's own)",
    )
    parser.add_argument(
        "--learning-rate",
        type=_learning_rate,
        metavar="LR",
        help="one learning rate for every optimizer (default: tuned per optimizer and problem)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seeds initial weights and minibatches, 0 to 2**32-1 (default: 0)",
    )
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(0),
        default=_BATCH_SIZE,
        metavar="B",
        help=f"minibatch size on digits; 0 = the whole set (default: {_BATCH_SIZE})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        metavar="DIR",
        help=f"folder for the PNG plots (default: {DEFAULT_OUT})",
    )
    return parser


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Refuses an ``--out`` that is a file or cannot be written, before any run."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder for the plots (it is created)")
    # Nothing is created here (without matplotlib there are no plots to write): the
    # nearest existing folder on the way must be one, and writable.
    existing = out.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        parser.error(f"--out {out} cannot be created ({existing} is a file); give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.error(f"--out {out} is not writable ({existing}); give a writable folder")


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_steps(
    parser: argparse.ArgumentParser,
    steps: int | None,
    problems: Sequence[str],
    optimizers: Sequence[str],
    batch_size: int,
) -> None:
    """Refuses a ``--steps`` whose recorded results would not fit in memory.

    Each run keeps its losses and, on the 2-D surfaces, its path: about 24 bytes per step
    in float64, for every run until the tables are printed; digits also draws its
    minibatch indices for every step before its loop (4 bytes per example).
    """
    if steps is None:
        return
    per_step = 24 * len(problems) * len(optimizers)
    if "digits" in problems:
        per_step += 4 * batch_size
    need = steps * per_step
    have = _memory_bytes()
    if have is not None and need > have // 2:
        parser.error(
            f"--steps {steps} would need about {need / 2**30:.1f} GiB to record the runs "
            f"(half of this machine's {have / 2**30:.1f} GiB is the limit); "
            f"use at most --steps {max(1, (have // 2) // per_step)}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the main job with command-line arguments ``argv`` (default: ``sys.argv[1:]``).

    Returns:
      The exit status: 0 on success, 1 when a problem's optional dependency is missing.

    Raises:
      SystemExit: with status 2 for unknown names or bad values (one line on stderr,
        before any run: also an ``--out`` that is a file or cannot be written, and a
        ``--steps`` whose records would not fit in half the machine's memory), and with
        status 0 after ``--help``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    every_problem = [*_problems.PROBLEMS, *_problems.EXTRA_PROBLEMS]
    problems = (
        _names(parser, args.problem, every_problem, "problem")
        if args.problem
        else list(_problems.PROBLEMS)  # the extra problems train models: only when named
    )
    optimizers = _names(parser, args.optimizers, list(_race.ALL_OPTIMIZERS), "optimizer")
    _check_steps(parser, args.steps, problems, optimizers, args.batch_size)
    _check_out(parser, args.out)

    def make_problem(name: str) -> _problems.Problem:
        if name == "digits":
            return _problems.digits(batch_size=args.batch_size)
        if name == "charlm":
            size = args.batch_size if args.batch_size not in (0, _BATCH_SIZE) else 16
            return _problems.charlm(batch_size=size)
        return _problems.PROBLEMS[name]()

    return _race.race(
        problems,
        optimizers,
        make_problem=make_problem,
        steps=args.steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        out=args.out,
        skip_missing=args.problem is None,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
