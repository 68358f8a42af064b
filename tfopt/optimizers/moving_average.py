"""``tfopt.MovingAverage``: an exponential moving average of the weights (TFA's ``MovingAverage``)."""

from __future__ import annotations

import contextlib

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.variables import as_tf_variable
from tfopt.core.wrapper import Wrapper, compute, read, wrapper_signature

__all__ = ["MovingAverage"]


class MovingAverage(Wrapper):
    """Step ``optimizer``, then update an ``average`` slot per variable: ``avg <- decay*avg + (1-decay)*x``.

    The average starts at the variable's value before its first step and is computed in the variable's compute
    dtype. For evaluation, ``opt.swap_average_weights(variables)`` exchanges the variables' values with their
    averages (calling it again swaps back, exactly), or ``with opt.averaged(variables): ...`` swaps them in for
    the block; ``opt.assign_average_vars(variables)`` copies the averages into the variables for good.
    ``iterations`` is the inner optimizer's.

    Args:
      optimizer: the ``tfopt.Optimizer`` to step.
      average_decay: decay in [0, 1] (a hyperparameter: may change between steps without retracing).
      name: the module name (default ``"MovingAverage"``).
    """

    average_decay = Hyperparameter(0.99, check=checks.closed_unit_interval)
    own_slot_names = ("average",)

    def _initial_slot(self, name, variable):
        return tf.identity(tf.convert_to_tensor(variable))

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        variables = [v for _, v in pairs]
        for v in variables:  # the averages start at the values before the first step
            self._slots_of(v)
        self._inner_step(pairs)  # (adds one to iterations, the inner optimizer's)
        for v in variables:
            average = self._slots_of(v)["average"]
            dtype = compute(v)
            decay = self._hyper_value("average_decay", dtype)
            average.assign(tf.cast(decay * read(average, dtype) + (1 - decay) * read(v, dtype), average.dtype))
        return self.iterations

    def _averages(self, variables) -> list[tuple]:
        pairs = []
        for position, variable in enumerate(variables):
            variable = as_tf_variable(variable, position)
            pairs.append((variable, self.get_slot(variable, "average")))
        return pairs

    def swap_average_weights(self, variables) -> None:
        """Exchange each variable's value with its average (exact: twice is the identity)."""
        for variable, average in self._averages(variables):
            value, mean = tf.identity(variable), tf.identity(average)
            variable.assign(mean)
            average.assign(value)

    @contextlib.contextmanager
    def averaged(self, variables):
        """``with opt.averaged(variables):`` the variables hold their averages inside the block."""
        variables = list(variables)
        self.swap_average_weights(variables)
        try:
            yield
        finally:
            self.swap_average_weights(variables)

    def assign_average_vars(self, variables) -> None:
        """Copy each variable's average into it (as TFA's ``assign_average_vars``)."""
        for variable, average in self._averages(variables):
            variable.assign(average)


MovingAverage.__signature__ = wrapper_signature(MovingAverage)
