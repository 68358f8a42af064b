"""``tfopt.Lookahead`` (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"; TFA's)."""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.wrapper import Wrapper, compute, read, wrapper_signature

__all__ = ["Lookahead"]


def _check_period(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1.")


class Lookahead(Wrapper):
    """The inner optimizer steps the fast weights (the variables); every ``sync_period`` calls the slow weights
    move toward them, ``slow <- slow + slow_step_size * (fast - slow)``, and the fast weights are reset to the
    slow ones.

    The slow weights are a ``slow`` slot per variable, starting at the variable's value before its first step.
    As in TFA, the sync is a ``tf.where`` on every call (no branch), in the variable's compute dtype.
    ``iterations`` is the inner optimizer's.

    Args:
      optimizer: the ``tfopt.Optimizer`` stepping the fast weights.
      sync_period: k, the calls between syncs (an int >= 1, fixed).
      slow_step_size: alpha in [0, 1] (a hyperparameter: may change between steps without retracing).
      name: the module name (default ``"Lookahead"``).
    """

    slow_step_size = Hyperparameter(0.5, check=checks.closed_unit_interval)
    sync_period = Option(6, check=_check_period)
    own_slot_names = ("slow",)
    argument_order = ("sync_period", "slow_step_size")  # TFA's

    def _initial_slot(self, name, variable):
        return tf.identity(tf.convert_to_tensor(variable))

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        variables = [v for _, v in pairs]
        for v in variables:  # the slow weights start at the values before the first step
            self._slots_of(v)
        self._inner_step(pairs)  # (adds one to iterations, the inner optimizer's)
        sync = tf.equal(self.iterations % self.sync_period, 0)
        for v in variables:
            slow = self._slots_of(v)["slow"]
            dtype = compute(v)
            slow_value, fast = read(slow, dtype), read(v, dtype)
            back = tf.cast(slow_value + self._hyper_value("slow_step_size", dtype) * (fast - slow_value), v.dtype)
            slow.assign(tf.where(sync, back, tf.convert_to_tensor(slow)))
            v.assign(tf.where(sync, back, tf.convert_to_tensor(v)))
        return self.iterations


Lookahead.__signature__ = wrapper_signature(Lookahead)
