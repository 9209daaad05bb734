"""Many small leaves: which layout of the optimizer state beats optax's step time?

Run from the repository root::

    python benchmarks/small_leaves.py           # 1,000 leaves of 512 (and more workloads)
    python benchmarks/small_leaves.py --quick   # 200 leaves of 512

The five rules of the suite (SGD with momentum, Nesterov, AdaGrad, RMSProp, Adam),
float32, the standard donated step. Layouts compared:

* **per leaf** (``optax.*``, ``gbopt.*``): every leaf is its own array in the state;
  XLA emits a loop per output (three per leaf for Adam, two for the others).
* **gbopt.stack_leaves** (``group_size`` 8 and 32): the inner transform sees up to that
  many small leaves of one shape stacked into one array, so its state holds one array
  per group and statistic and its arithmetic runs as one loop per group.
* **packed, static slices** (``optax.flatten(gbopt.adam(...))``): the state is one flat
  vector per statistic; each step concatenates the gradients, updates the flat vectors
  in one loop each, and slices the update back into leaves (Adam and momentum only).
* **packed, offsets in the state** (a prototype in this file): the same, with each leaf's
  offset kept as an int32 scalar in the state and read with ``lax.dynamic_slice``.

What decides the outcome on XLA:CPU (measured while building this script, jax 0.10.2):

* each array the jitted step *returns* costs host time, and more per array the more
  there are: adding 1 to n leaves of 512 (donated) took 1.1 ms for 1,000 leaves, 2.9 ms
  for 2,000 and 11 ms for 4,000; one input returned as 4,000 outputs cost as much as
  4,000 kernels with 4,000 outputs (13 ms), while 12,000 kernels with one output took
  6.5 ms. Per-leaf Adam returns 3 arrays per leaf (p, m, v), a stacked state 1 + 2/8.
* XLA:CPU compiles each *distinct* fused loop once: 1,000 identical per-leaf loops cost
  one compile, but unpacking a flat vector puts a different constant offset into each
  leaf's loop, so it compiles 1,000 loops (about 9 ms each). Stacking in groups of
  ``group_size`` needs only ``group_size`` distinct row offsets, shared by every group,
  so it compiles faster than per-leaf optax (fewer, larger operations). Offsets kept in
  the state hide them from XLA too, but cost two more arrays per leaf at the jit
  boundary. ``lax.optimization_barrier`` and a ``while_loop`` around the offsets do not
  hide them: XLA folds the constants through both.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gbopt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as h  # noqa: E402


class PackedState(NamedTuple):
    """State of the prototype: the inner state on the flat vector, and leaf offsets."""

    inner: Any
    offsets: tuple


def packed_with_runtime_offsets(inner: Any) -> gbopt.GradientTransformation:
    """Prototype: ``inner`` on one flat vector; unpacked with offsets read from the state."""

    def flat(tree):
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])

    def init_fn(params):
        sizes = [x.size for x in jax.tree.leaves(params)]
        offsets = tuple(jnp.int32(o) for o in np.cumsum([0, *sizes])[:-1])
        return PackedState(inner.init(flat(params)), offsets)

    def update_fn(updates, state, params=None, **extra_args):
        leaves, treedef = jax.tree.flatten(updates)
        flat_params = None if params is None else flat(params)
        u, inner_state = inner.update(flat(updates), state.inner, flat_params, **extra_args)
        pieces = [
            jax.lax.dynamic_slice(u, (o,), (x.size,)).reshape(x.shape).astype(x.dtype)
            for o, x in zip(state.offsets, leaves, strict=True)
        ]
        return treedef.unflatten(pieces), PackedState(inner_state, state.offsets)

    return gbopt.GradientTransformation(init_fn, update_fn)


RULES = {opt.name: (opt.optax, opt.gbopt) for opt in h.OPTIMIZERS}
PACKED = ("adam", "sgd+momentum")  # the slow-compiling packed layouts: these two only


def layouts(rule: str) -> dict:
    make_optax, make_gbopt = RULES[rule]
    out = {
        "optax (per leaf)": (make_optax, optax.apply_updates),
        "gbopt (per leaf)": (make_gbopt, gbopt.apply_updates),
        "gbopt.stack_leaves, groups of 8": (
            lambda: gbopt.stack_leaves(make_gbopt(), group_size=8),
            gbopt.apply_updates,
        ),
        "gbopt.stack_leaves, groups of 32": (
            lambda: gbopt.stack_leaves(make_gbopt(), group_size=32),
            gbopt.apply_updates,
        ),
    }
    if rule in PACKED:
        out["packed, static slices"] = (lambda: optax.flatten(make_gbopt()), gbopt.apply_updates)
        out["packed, offsets in the state"] = (
            lambda: packed_with_runtime_offsets(make_gbopt()),
            gbopt.apply_updates,
        )
    return out


def boundary_arrays(runner: h.JaxRunner) -> int:
    """Arrays into and out of the step: params, state, grads in; params, state out."""
    n_p, n_s = len(jax.tree.leaves(runner.params)), len(jax.tree.leaves(runner.state))
    return 2 * n_p + n_s + n_p + n_s


def run(rule: str, wl: h.Workload, rounds: int, budget_s: float) -> None:
    params, grads = wl.arrays()
    factories = {
        name: (lambda make=make, apply=apply: h.JaxRunner(make(), apply, params, grads))
        for name, (make, apply) in layouts(rule).items()
    }
    keep = lambda r: (r.stats, boundary_arrays(r))  # noqa: E731
    t = h.compare(factories, rounds=rounds, budget_s=budget_s, keep=keep)
    ref = "optax (per leaf)"
    ref_compile = np.median([s.total_s for s, _ in t.info[ref]])
    rows = []
    for name in factories:
        stats, arrays = t.info[name][0]
        compile_s = np.median([s.total_s for s, _ in t.info[name]])
        rows.append(
            [
                name,
                h.ms(t.median(name)),
                f"**{h.ratio(t.ratio(name, ref))}**",
                f"{compile_s:.2f} s",
                f"**{h.ratio(compile_s / ref_compile)}**",
                stats.fusions,
                arrays,
                f"{stats.temp_bytes / (4 * wl.size):.2f}",
            ]
        )
    print(f"### {rule}, {wl.label()}\n")
    print(
        h.table(
            [
                "layout",
                "step",
                "step / optax",
                "compile",
                "compile / optax",
                "fused loops",
                "arrays in + out",
                "temp / params",
            ],
            rows,
        )
    )
    print(f"\n({t.count} interleaved rounds in two sessions.)\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="200 leaves of 512")
    group.add_argument("--smoke", action="store_true", help="20 leaves (used by the tests)")
    args = parser.parse_args(argv)
    print("# Many small leaves: layouts of the optimizer state\n")
    for line in h.machine_lines():
        print(line)
    print()
    if args.smoke:
        run("adam", h.Workload("small leaves", {f"w{i:02d}": (16,) for i in range(20)}), 2, 1.0)
        return 0
    n = 200 if args.quick else 1000
    same = h.Workload("leaves of 512", {f"w{i:04d}": (512,) for i in range(n)})
    for rule in RULES:
        run(rule, same, 300, 8.0 if args.quick else 30.0)
    if not args.quick:
        mixed = {f"w{i:04d}": (512 + i % 97,) for i in range(300)}
        run("adam", h.Workload("mixed sizes, 97 distinct", mixed), 400, 20.0)
        shapes = h.transformer_shapes(layers=16, d=128, vocab=8192)
        run("adam", h.Workload("transformer-shaped", shapes), 400, 20.0)
        run("adam", h.Workload("10 tiny leaves", {f"w{i}": (8,) for i in range(10)}), 2000, 10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
