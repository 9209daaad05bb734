"""What `gbopt.skip_nonfinite` costs on top of the optimizer it wraps (one jitted step).

Prints the compile time and the median step time of `adam` and `skip_nonfinite(adam)`
(update and apply, the parameters and state donated) for one large leaf and for many
small leaves, on the default device. Run: `python benchmarks/skip_nonfinite.py`.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

import gbopt


def _step_time(tx, params, repeats=30):
    state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gbopt.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    start = time.perf_counter()
    params, state = step(params, state, grads)  # compile and run once
    jax.block_until_ready(params)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params, state = step(params, state, grads)
        jax.block_until_ready((params, state))
        times.append(time.perf_counter() - start)
    return compile_s, statistics.median(times)


def main():
    trees = {
        "1 leaf of 4M": lambda: {"w": jnp.zeros((2048, 2048))},
        "200 leaves of 20k": lambda: {f"l{i}": jnp.zeros((20_000,)) for i in range(200)},
    }
    print(f"device: {jax.devices()[0].device_kind}")
    print(f"{'tree':<18} {'transform':<22} {'compile s':>9} {'step ms':>8}")
    for name, make in trees.items():
        for label, tx in [
            ("adam", gbopt.adam(1e-3)),
            ("skip_nonfinite(adam)", gbopt.skip_nonfinite(gbopt.adam(1e-3))),
        ]:
            compile_s, step_s = _step_time(tx, make())
            print(f"{name:<18} {label:<22} {compile_s:>9.2f} {step_s * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
