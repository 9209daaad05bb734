"""One jitted, donated step of gbopt.adam against optax.adam: medians and their ratio.

Run from the repository root::

    python benchmarks/adam_step.py           # one 16M-parameter leaf and 200 transformer leaves
    python benchmarks/adam_step.py --quick   # a 4M leaf and 51 leaves

Same hyperparameters (lr 1e-3, b1 0.9, b2 0.999, eps 1e-8), float32, the standard step
``updates, state = tx.update(grads, state, params); params = apply_updates(params, updates)``
in one ``jax.jit`` with ``params`` and ``state`` donated. The two are timed in
interleaved rounds (random order per round) and the ratio is the median of the per-round
ratios; see ``_harness.py``. The full suite is ``benchmarks/suite.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="smaller trees, fewer rounds")
    group.add_argument("--smoke", action="store_true", help="tiny trees (used by the tests)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    args = parser.parse_args(argv)
    if args.smoke:
        rounds, size, layers = args.rounds or 2, 2**10, (1, 8, 32)
    elif args.quick:
        rounds, size, layers = args.rounds or 40, 2**22, (4, 128, 2048)
    else:
        rounds, size, layers = args.rounds or 200, 2**24, (16, 128, 8192)
    trees = [
        h.Workload("one large leaf", {"w": (size,)}),
        h.Workload("transformer-shaped", h.transformer_shapes(*layers)),
    ]
    print("# gbopt.adam vs optax.adam: one jitted, donated step\n")
    for line in h.machine_lines():
        print(line)
    print()
    rows = []
    for wl in trees:
        params, grads = wl.arrays()
        g = h.JaxRunner(gbopt.adam(1e-3), gbopt.apply_updates, params, grads)
        o = h.JaxRunner(optax.adam(1e-3), optax.apply_updates, params, grads)
        t = h.interleave({"gbopt": g, "optax": o}, rounds=rounds, budget_s=60)
        n = wl.size
        rows.append(
            [
                wl.label(),
                h.ms(t.median("gbopt")),
                h.ms(t.median("optax")),
                f"**{h.ratio(t.ratio('gbopt', 'optax'))}**",
                f"{g.stats.bytes_accessed / n:.1f} / {o.stats.bytes_accessed / n:.1f}",
                f"{g.stats.fusions} / {o.stats.fusions}",
                f"{g.stats.total_s:.2f} / {o.stats.total_s:.2f}",
                t.count,
            ]
        )
    print(
        h.table(
            [
                "parameters",
                "gbopt.adam",
                "optax.adam",
                "gbopt/optax",
                "XLA bytes/param",
                "fused loops",
                "compile s",
                "rounds",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
