"""Analysis of stores, runs and stacks: layer probes, comparison tables, figures."""
