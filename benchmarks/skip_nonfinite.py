"""What `gbopt.skip_nonfinite` costs on top of the optimizer it wraps (one jitted step).

Run from the repository root::

    python benchmarks/skip_nonfinite.py            # one 4M leaf, 200 leaves of 20k
    python benchmarks/skip_nonfinite.py --smoke    # tiny trees (used by the tests)

Prints, for each tree, `adam`, `skip_nonfinite(adam)` (the default: the gradients the
optimizer reads are checked, and the new state is selected element-wise where it is
computed), `skip_nonfinite(adam, check_outputs=True)` and `optax.apply_if_finite(adam)`
(with `max_consecutive_errors` large enough never to apply a bad step): the standard
step ``updates, state = tx.update(grads, state, params); params = apply_updates(params,
updates)`` in one ``jax.jit`` with ``params`` and ``state`` donated, float32, on clean
gradients (every step is applied).

The transforms are timed in interleaved rounds, a random order each round, in two
sessions that create them in opposite orders (see ``_harness.py``). Columns: the median
wall time of a step; its ratio to Adam (the median of the per-round ratios, geometric
mean of the two sessions); the median CPU time of the process for a step (all of XLA's
threads: another program on a shared machine inflates it less than the wall time) and
its ratio to Adam's; what XLA's analyses say of the compiled step (bytes accessed per
parameter, temporary memory, ``copy`` instructions: a donated buffer that XLA cannot
update in place is copied first); and the compile time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402

TRANSFORMS = {
    "adam": lambda: gbopt.adam(1e-3),
    "skip_nonfinite(adam)": lambda: gbopt.skip_nonfinite(gbopt.adam(1e-3)),
    "skip_nonfinite(adam, check_outputs=True)": lambda: gbopt.skip_nonfinite(
        gbopt.adam(1e-3), check_outputs=True
    ),
    "optax.apply_if_finite": lambda: optax.apply_if_finite(gbopt.adam(1e-3), 2**31 - 1),
}


class Runner(h.JaxRunner):
    """A compiled, donated step that also records the process's CPU time per step."""

    def __init__(self, *args):
        super().__init__(*args)
        self.cpu: list[float] = []
        entry = self.stats.compiled.as_text()
        self.copies = entry[entry.find("ENTRY") :].count(" copy(")

    def run(self) -> float:
        c = time.process_time()
        wall = super().run()
        self.cpu.append(time.process_time() - c)
        return wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny trees (used by the tests)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per session")
    args = parser.parse_args(argv)
    if args.smoke:
        rounds, trees = args.rounds or 3, [h.Workload("one leaf", {"w": (64,)})]
        trees.append(h.Workload("many leaves", {f"l{i}": (8,) for i in range(3)}))
    else:
        rounds = args.rounds or 150
        trees = [
            h.Workload("one leaf", {"w": (2048, 2048)}),
            h.Workload("many leaves", {f"l{i:03d}": (20_000,) for i in range(200)}),
        ]
    print("# What gbopt.skip_nonfinite costs: one jitted, donated Adam step\n")
    for line in h.machine_lines():
        print(line)
    print()
    rows = []
    for wl in trees:
        params, grads = wl.arrays()
        factories = {
            name: (lambda make=make, p=params, g=grads: Runner(make(), gbopt.apply_updates, p, g))
            for name, make in TRANSFORMS.items()
        }
        result = h.compare(
            factories, rounds=rounds, budget_s=120, keep=lambda r: (r.stats, r.copies, r.cpu)
        )
        cpu = {  # each session's CPU times after the two warm-up steps
            name: statistics.median([t for *_, times in info for t in times[2:]])
            for name, info in result.info.items()
        }
        for name, info in result.info.items():
            stats, copies, _ = info[0]
            rows.append(
                [
                    wl.label(),
                    name,
                    h.ms(result.median(name)),
                    f"**{h.ratio(result.ratio(name, 'adam'))}**",
                    h.ms(cpu[name]),
                    h.ratio(cpu[name] / cpu["adam"]),
                    f"{stats.bytes_accessed / wl.size:.1f}",
                    f"{stats.temp_bytes / 2**20:.2f}",
                    copies,
                    f"{stats.total_s:.2f}",
                ]
            )
    headers = [
        "parameters",
        "transform",
        "wall",
        "/ adam",
        "CPU",
        "/ adam",
        "XLA bytes/param",
        "temp MiB",
        "copies",
        "compile s",
    ]
    print(h.table(headers, rows))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{result.count} interleaved rounds (last tree); load average at the end: {load}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
