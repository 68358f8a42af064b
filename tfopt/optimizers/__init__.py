"""The optimizers: one file per rule or wrapper, its update rule as math in the docstring."""
