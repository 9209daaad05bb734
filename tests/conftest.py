"""Test-session set-up: eight simulated CPU devices (for the sharding tests), CPU only.

XLA reads these flags once, when JAX initialises its backend, so they are set here,
before any test module imports JAX.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
