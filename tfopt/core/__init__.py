"""The shared machinery: the ``Optimizer`` base class, hyperparameters and their checks, clipping, variables,
validation, the wrapper base, and ``chain`` with its transforms."""
