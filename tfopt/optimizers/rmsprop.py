"""RMSprop (Tieleman & Hinton, 2012, Lecture 6.5 of "Neural Networks for Machine Learning"),
optionally centered (Graves, 2013, "Generating Sequences With Recurrent Neural Networks", eqs. 38-45)
and with momentum, as Keras 3's ``keras.optimizers.RMSprop``.

With slots ``velocity`` v, ``momentum`` p and, when centered, ``average_gradient`` a (per variable,
all start at 0):

    v <- rho * v + (1 - rho) * g^2
    a <- rho * a + (1 - rho) * g                        (centered only)
    s = lr * g / sqrt(v + eps)                          (plain)
    s = lr * g / sqrt(v - a^2 + eps)                    (centered: v - a^2 estimates the variance)
    p <- momentum * p + s
    x <- x - p

Epsilon sits inside the root, as in Keras (the paper has none). With ``momentum=0``, ``p = s``
exactly, so the numbers are Keras's in both cases; Keras creates ``p`` only when its (fixed)
momentum is > 0, tfopt always does, since ``momentum`` is a hyperparameter that may change between
steps (one slot more per parameter). ``1 - rho`` is formed once per step in float64, as Keras forms
it from the Python float: with the same arguments the float32 steps are Keras's, bit for bit.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core._ops import divide_by_sqrt
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer


def rmsprop_update(grad, velocity, momentum_slot, average_gradient, *, learning_rate, rho, one_minus_rho,
                   momentum, epsilon, centered: bool):
    """Return ``(delta, velocity, momentum_slot, average_gradient)`` for one variable; x <- x - delta.

    ``average_gradient`` is ignored (and returned as is) unless ``centered``.
    """
    velocity = rho * velocity + one_minus_rho * tf.square(grad)          # mean square
    if centered:
        average_gradient = rho * average_gradient + one_minus_rho * grad  # mean
        denominator = velocity - tf.square(average_gradient) + epsilon
    else:
        denominator = velocity + epsilon
    increment = divide_by_sqrt(learning_rate * grad, denominator)
    momentum_slot = momentum * momentum_slot + increment
    return momentum_slot, velocity, momentum_slot, average_gradient


class RMSprop(Optimizer):
    """RMSprop with Keras 3's arguments, defaults and numbers.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      rho: decay rate of the mean square (and mean) in [0, 1).
      momentum: in [0, 1); 0 is plain RMSprop.
      epsilon: ``eps`` >= 0, added to the mean square under the root.
      centered: divide by the root of the estimated variance ``v - a^2`` instead of ``v``
        (one slot more; often more stable, slower per step).
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``velocity``, ``momentum`` and (centered) ``average_gradient``, Keras's names.
    """

    rho = Hyperparameter(0.9, check=checks.unit_interval)
    momentum = Hyperparameter(0.0, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)
    centered = Option(False, check=checks.boolean)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("velocity", "momentum", "average_gradient") if self.centered else ("velocity", "momentum")

    def step_values(self, *, rho, **_):
        return {"one_minus_rho": 1 - rho}

    def update(self, grad, slots, *, learning_rate, rho, one_minus_rho, momentum, epsilon, **_):
        delta, velocity, momentum_slot, average_gradient = rmsprop_update(
            grad, slots["velocity"], slots["momentum"], slots.get("average_gradient"),
            learning_rate=learning_rate, rho=rho, one_minus_rho=one_minus_rho, momentum=momentum,
            epsilon=epsilon, centered=self.centered)
        new_slots = {"velocity": velocity, "momentum": momentum_slot}
        if self.centered:
            new_slots["average_gradient"] = average_gradient
        return delta, new_slots
