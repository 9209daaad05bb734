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
