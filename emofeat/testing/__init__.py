"""Tiny models in the hub formats and the synthetic corpus: what tests, the demo and benchmarks run on."""
