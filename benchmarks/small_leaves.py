"""Many small leaves: can a packed layout beat optax's step time without losing compile time?

Run from the repository root::

    python benchmarks/small_leaves.py           # 1,000 leaves of 512 (and 300 of mixed sizes)
    python benchmarks/small_leaves.py --quick   # 200 leaves of 512

Adam and SGD with momentum, float32, the standard donated step. Layouts compared:

* **per leaf** (``optax.adam``, ``gbopt.adam``): every leaf is its own array in the
  state; XLA emits three loops per leaf for Adam, two for momentum.
* **packed, static slices** (``optax.flatten(gbopt.adam(...))``): the state is one flat
  vector per statistic; each step concatenates the gradients, updates the flat vectors
  in one loop each, and slices the update back into leaves.
* **packed, offsets in the state** (a prototype in this file): the same, with each leaf's
  offset kept as an int32 scalar in the state and read with ``lax.dynamic_slice``.

What decides the outcome on XLA:CPU (measured while building this script):

* each array passed into or out of the jitted step costs host time (argument handling,
  donation, output objects): a step that only adds 1 to 1,000 leaves of 512 took about as
  long as optax's whole Adam step, and an executable with 1 input and 1,000 fused loops
  ran 5x faster than one with 1,000 inputs and 1,000 loops. Per-leaf Adam moves
  7 arrays per leaf (p, g, m, v in; p, m, v out), a packed state 3 (p, g in; p out);
* XLA:CPU compiles each *distinct* fused loop once: 1,000 identical per-leaf loops cost
  one compile, but unpacking a flat vector puts a different constant offset into each
  leaf's loop, so it compiles 1,000 loops. Offsets that XLA cannot see (state scalars)
  restore the sharing, but cost two more arrays per leaf at the jit boundary.
  ``lax.optimization_barrier`` and a ``while_loop`` around the offsets do not hide them:
  XLA folds the constants through both.
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


RULES = {
    "adam": (lambda: optax.adam(1e-3), lambda: gbopt.adam(1e-3)),
    "sgd+momentum": (lambda: optax.sgd(1e-3, 0.9), lambda: gbopt.momentum(1e-3, 0.9)),
}


def layouts(rule: str) -> dict:
    make_optax, make_gbopt = RULES[rule]
    return {
        "optax (per leaf)": (make_optax, optax.apply_updates),
        "gbopt (per leaf)": (make_gbopt, gbopt.apply_updates),
        "packed, static slices": (lambda: optax.flatten(make_gbopt()), gbopt.apply_updates),
        "packed, offsets in the state": (
            lambda: packed_with_runtime_offsets(make_gbopt()),
            gbopt.apply_updates,
        ),
    }


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
    print("# Many small leaves: layouts of Adam's state\n")
    for line in h.machine_lines():
        print(line)
    print()
    if args.smoke:
        run("adam", h.Workload("small leaves", {f"w{i:02d}": (16,) for i in range(20)}), 2, 1.0)
        return 0
    n = 200 if args.quick else 1000
    same = h.Workload("leaves of 512", {f"w{i:04d}": (512,) for i in range(n)})
    for rule in RULES:
        run(rule, same, 300, 8.0 if args.quick else 40.0)
    if not args.quick:
        mixed = {f"w{i:04d}": (512 + i % 97,) for i in range(300)}
        run("adam", h.Workload("mixed sizes, 97 distinct", mixed), 400, 20.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
