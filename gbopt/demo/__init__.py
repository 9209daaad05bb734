"""Demonstrations: workloads for the main job and benchmarks (not imported by ``import gbopt``)."""
