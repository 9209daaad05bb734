"""The main job: ``python -m gbopt`` races every optimizer on built-in problems.

With no arguments it runs all of them on every problem with tuned learning rates, prints
a markdown table per problem (optimizer, final loss, steps to reach a tolerance, time
per step) and writes loss curves and paths on the 2-D surfaces as PNG files to
``gbopt-out/``. ``python -m gbopt --help`` lists the options, problems and optimizers.
"""

from __future__ import annotations

import argparse
import math
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


def _names(
    parser: argparse.ArgumentParser, given: Sequence[str] | None, valid: Sequence[str], what: str
):
    """Splits ``given`` (space- or comma-separated) into known names; ``all`` means every one."""
    if not given:
        return list(valid)
    names = []
    for item in given:
        for name in item.replace(",", " ").split():
            name = name.strip().lower()
            chosen = list(valid) if name == "all" else [name]
            if name != "all" and name not in valid:
                parser.error(f"unknown {what} {name!r}; valid {what}s: {', '.join(valid)} (or all)")
            names += [n for n in chosen if n not in names]
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m gbopt``."""
    summaries = {**_problems.SUMMARIES, **_problems.EXTRA_SUMMARIES}
    problems = "\n".join(f"  {name:<12}{doc}" for name, doc in summaries.items())
    parser = argparse.ArgumentParser(
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
        "--seed", type=int, default=0, help="seeds initial weights and minibatches (default: 0)"
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the main job with command-line arguments ``argv`` (default: ``sys.argv[1:]``).

    Returns:
      The exit status: 0 on success, 1 when a problem's optional dependency is missing.

    Raises:
      SystemExit: with status 2 (argparse's) for unknown names or bad values, and with
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
