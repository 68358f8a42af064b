"""The convergence lab: test problems, the batched harness, results, the benchmark and its plots."""
