"""Hyperparameters that can change between steps without retracing.

A number is stored in a float64 ``tf.Variable`` owned by the optimizer, so
``opt.learning_rate = 0.01`` is an ``assign`` that an already traced
``tf.function`` sees on its next call. A value may also be a ``tf.Variable``
(or Keras variable) the user owns, of any shape that broadcasts against the
variables (a learning rate per row, say), or a callable of the step such as
a ``keras.optimizers.schedules.LearningRateSchedule``. Values are cast to each
variable's compute dtype where they are used.
"""

from __future__ import annotations

import tensorflow as tf


def _is_variable(value) -> bool:
    return isinstance(value, tf.Variable) or isinstance(getattr(value, "value", None), tf.Variable)


class Hyperparameter:
    """Descriptor for one hyperparameter of an ``Optimizer`` subclass.

    ``check(name, value)`` validates a value and raises ``ValueError`` before
    it is stored. ``schedulable`` allows callables of the step.
    """

    def __init__(self, check, schedulable: bool = False):
        self.check = check
        self.schedulable = schedulable

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, optimizer, owner=None):
        if optimizer is None:
            return self
        try:
            return optimizer._hyper[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, optimizer, value) -> None:
        if _is_variable(value):
            self.check(self.name, value)
            optimizer._hyper[self.name] = value
        elif callable(value):
            if not self.schedulable:
                raise TypeError(f"{self.name} must be a number or a variable, not a {type(value).__name__}.")
            optimizer._hyper[self.name] = value
        else:
            self._set_number(optimizer, value)

    def _set_number(self, optimizer, value) -> None:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self.name} must be a number, a variable or a schedule, not {value!r}.") from None
        self.check(self.name, value)
        current = optimizer._hyper.get(self.name)
        if id(current) in optimizer._own_hyper_ids:
            current.assign(value)  # seen by traced tf.functions: no retrace
            return
        with tf.init_scope():
            variable = tf.Variable(value, dtype=tf.float64, trainable=False, name=self.name)
        optimizer._own_hyper_ids.add(id(variable))
        optimizer._hyper[self.name] = variable

    def value_at(self, optimizer, step: tf.Tensor) -> tf.Tensor:
        """The value for ``step`` (1-based) as a float64 tensor; schedules are checked to be >= 0."""
        value = optimizer._hyper[self.name]
        if callable(value) and not _is_variable(value):
            value = tf.cast(value(step - 1), tf.float64)  # Keras schedules count from 0
            tf.debugging.assert_greater_equal(
                value, tf.constant(0, tf.float64), message=f"{self.name} schedule returned a negative or NaN value"
            )
            return value
        return tf.cast(tf.convert_to_tensor(value), tf.float64)
