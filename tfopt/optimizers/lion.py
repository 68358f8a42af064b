"""Lion, EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization
Algorithms", Algorithm 2).

With slot ``m`` (per variable, starts at 0):

    c = b1 * m + (1 - b1) * g              # interpolation: its sign is the step
    x <- x - lr * sign(c)
    m <- b2 * m + (1 - b2) * g             # momentum, updated after the step

No epsilon and no bias correction. The paper's decoupled weight decay
(``x <- x - lr * (sign(c) + wd * x)``) is the base optimizer's ``weight_decay=`` keyword
(Keras's: ``x <- x - x * wd * lr`` before the step, the same update rounded in Keras's order).
``keras.optimizers.Lion`` has the same arguments and defaults (``learning_rate=0.001``,
``beta_1=0.9``, ``beta_2=0.99``, ``weight_decay=None``) and computes the same numbers bit
for bit.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer


def lion_update(grad, m, *, learning_rate, beta_1, beta_2):
    """Return ``(delta, m)`` for one variable; x <- x - delta (Keras's operations, in its order)."""
    delta = learning_rate * tf.sign(m * beta_1 + grad * (1 - beta_1))
    m = m * beta_2 + grad * (1 - beta_2)
    return delta, m


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule). Lion's steps have
        size ``lr`` in every coordinate: the paper uses a learning rate 3-10x smaller than Adam's.
      beta_1: ``b1`` in [0, 1], the weight of the momentum in the step's sign.
      beta_2: ``b2`` in [0, 1), the momentum's decay rate.
      **kwargs: ``weight_decay`` (decoupled, as in the paper and Keras), ``clipnorm``,
        ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("m",)
    beta_1 = Hyperparameter(0.9, check=checks.closed_unit_interval)
    beta_2 = Hyperparameter(0.99, check=checks.unit_interval)

    def update(self, grad, slots, *, learning_rate, beta_1, beta_2, **_):
        delta, m = lion_update(grad, slots["m"], learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2)
        return delta, {"m": m}
