"""Benchmarks (not shipped with the package): see bench/README.md."""
