"""Adagrad (Duchi, Hazan & Singer, 2011, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 12), as Keras 3's ``keras.optimizers.Adagrad``.

Keras keeps an accumulator ``A`` that starts at ``initial_accumulator_value`` (A0):

    A <- A + g^2
    x <- x - lr * g / sqrt(A + eps)

tfopt's slots start at 0, so the slot is ``sum_of_squares`` S = A - A0 (the paper's sum of squared
gradients) and the step adds A0 back:

    S <- S + g^2
    x <- x - lr * g / sqrt((S + A0) + eps)

The same update; in float32 it rounds differently from Keras's (one more addition: ``S + A0``
instead of Keras's rounded running ``A``), about 1e-7 relative. Keras's accumulator is
``get_slot(x, "sum_of_squares") + initial_accumulator_value``. Since A0 is added at every step it is
a hyperparameter like the others (a number or a ``tf.Variable``).
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core._ops import divide_by_sqrt
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer


def adagrad_update(grad, sum_of_squares, *, learning_rate, initial_accumulator_value, epsilon):
    """Return ``(delta, sum_of_squares)`` for one variable; x <- x - delta."""
    sum_of_squares = sum_of_squares + tf.square(grad)
    accumulator = sum_of_squares + initial_accumulator_value      # Keras's accumulator
    delta = divide_by_sqrt(learning_rate * grad, accumulator + epsilon)
    return delta, sum_of_squares


class Adagrad(Optimizer):
    """Adagrad with Keras 3's arguments and defaults.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      initial_accumulator_value: ``A0`` >= 0, the accumulator's starting value.
      epsilon: ``eps`` >= 0, added to the accumulator under the root.
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slot: ``sum_of_squares`` (Keras's ``accumulator`` minus ``initial_accumulator_value``).
    """

    slot_names = ("sum_of_squares",)
    initial_accumulator_value = Hyperparameter(0.1, check=checks.non_negative)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def update(self, grad, slots, *, learning_rate, initial_accumulator_value, epsilon, **_):
        delta, sum_of_squares = adagrad_update(grad, slots["sum_of_squares"], learning_rate=learning_rate,
                                               initial_accumulator_value=initial_accumulator_value, epsilon=epsilon)
        return delta, {"sum_of_squares": sum_of_squares}
