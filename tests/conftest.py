"""Test-session set-up: eight simulated CPU devices (for the sharding tests), CPU only.

XLA reads these flags once, when JAX initialises its backend, so they are set here,
before any test module imports JAX.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()

# One LAPACK/BLAS thread per test process: the suite runs one process per core (xdist), and
# LAPACK's threads spin-wait on a busy machine (eigh of 256 x 256: 5 s instead of 57 ms).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


# Step-by-step reference suites (against torch.optim, optax and NumPy, over every option and
# dtype) are part of the full run; the quick local run (`-m "not slow"`) keeps the contract,
# the kit, the primitives and the optimizers' own tests.
REFERENCE_SUITES = {
    "test_pytorch.py",
    "test_pytorch_more.py",
    "test_pytorch_lr_scheduler.py",
    "test_low_precision.py",
    "test_complex.py",
    "test_adaptive.py",
    "test_factored.py",
    "test_quantize.py",
    "test_optimizers_optax.py",
    "test_interop_optax.py",
    "test_invariants.py",
    "test_checkpoint.py",
    "test_stacking.py",
    "test_describe.py",
    "test_main.py",
    "test_properties.py",
    "test_charlm.py",
    "test_matrix.py",
}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        if item.path.name in REFERENCE_SUITES:
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session):
    # Everything imported so far (JAX, PyTorch, optax, Flax, the test modules) lives until
    # the session ends: moved out of the garbage collector's generations, it is no longer
    # scanned by every full collection (nor by the benchmark scripts' gc.collect() calls).
    import gc

    gc.collect()
    gc.freeze()
