"""What `gbopt.skip_nonfinite` costs on top of the optimizer it wraps (one jitted step).

Prints, for one large leaf and for many small leaves, the compile time and the step time
of `adam`, `skip_nonfinite(adam)` (the default: the gradients the optimizer reads are
checked, the step runs inside a `lax.cond`), `skip_nonfinite(adam, check_outputs=True)`
and `optax.apply_if_finite(adam)`: update and apply, parameters and state donated, on the
default device. The transforms are timed interleaved; each figure is the minimum over
the repeats of the process's CPU time for one step (all of XLA's threads), which other
programs on a shared machine do not inflate, and the median wall time beside it.
Run: `python benchmarks/skip_nonfinite.py`.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gbopt


def _compiled(tx, params):
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    start = time.perf_counter()
    params, state = step(params, state, grads)  # compile and run once
    jax.block_until_ready(params)
    return [step, params, state, grads, time.perf_counter() - start]


def main(repeats: int = 30):
    trees = {
        "1 leaf of 4M": lambda: {"w": jnp.zeros((2048, 2048))},
        "200 leaves of 20k": lambda: {f"l{i}": jnp.zeros((20_000,)) for i in range(200)},
    }
    transforms = {
        "adam": lambda: gbopt.adam(1e-3),
        "skip_nonfinite(adam)": lambda: gbopt.skip_nonfinite(gbopt.adam(1e-3)),
        "  check_outputs=True": lambda: gbopt.skip_nonfinite(gbopt.adam(1e-3), check_outputs=True),
        "optax.apply_if_finite": lambda: optax.apply_if_finite(gbopt.adam(1e-3), 10**6),
    }
    print(f"device: {jax.devices()[0].device_kind}")
    header = (
        f"{'tree':<18} {'transform':<22} {'compile s':>9} {'CPU ms':>8} {'ratio':>6} {'wall ms':>8}"
    )
    print(header)
    for name, make in trees.items():
        runs = {label: _compiled(tx(), make()) for label, tx in transforms.items()}
        cpu = {label: [] for label in runs}
        wall = {label: [] for label in runs}
        for _ in range(repeats):
            for label, run in runs.items():
                step, params, state, grads, _ = run
                c, w = time.process_time(), time.perf_counter()
                params, state = step(params, state, grads)
                jax.block_until_ready((params, state))
                cpu[label].append(time.process_time() - c)
                wall[label].append(time.perf_counter() - w)
                run[1], run[2] = params, state
        base = min(cpu["adam"])
        for label, run in runs.items():
            print(
                f"{name:<18} {label:<22} {run[4]:>9.2f} {min(cpu[label]) * 1e3:>8.2f} "
                f"{min(cpu[label]) / base:>5.2f}x {statistics.median(wall[label]) * 1e3:>8.2f}"
            )


if __name__ == "__main__":
    main()
