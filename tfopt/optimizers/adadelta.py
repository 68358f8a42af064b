"""Adadelta (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701,
Algorithm 1), as Keras 3's ``keras.optimizers.Adadelta``.

With slots ``accumulated_grad`` E[g^2] and ``accumulated_delta_var`` E[dx^2] (per variable, start
at 0) and RMS[y] = sqrt(y + eps):

    E[g^2]  <- rho * E[g^2] + (1 - rho) * g^2
    dx       = RMS[E[dx^2]] / RMS[E[g^2]] * g            (with the previous E[dx^2])
    E[dx^2] <- rho * E[dx^2] + (1 - rho) * dx^2
    x       <- x - lr * dx

The paper has no learning rate (``lr = 1``); Keras scales the step by ``lr`` (default 0.001) but
accumulates the unscaled ``dx``, and so does tfopt. ``1 - rho`` is formed once per step in float64,
as Keras forms it from the Python float: the float32 steps are Keras's, bit for bit.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core._ops import divide_by_sqrt
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer


def adadelta_update(grad, accumulated_grad, accumulated_delta_var, *, learning_rate, rho, one_minus_rho, epsilon):
    """Return ``(delta, accumulated_grad, accumulated_delta_var)`` for one variable; x <- x - delta."""
    accumulated_grad = rho * accumulated_grad + one_minus_rho * tf.square(grad)
    delta_var = divide_by_sqrt(tf.sqrt(accumulated_delta_var + epsilon) * grad, accumulated_grad + epsilon)
    accumulated_delta_var = rho * accumulated_delta_var + one_minus_rho * tf.square(delta_var)
    return learning_rate * delta_var, accumulated_grad, accumulated_delta_var


class Adadelta(Optimizer):
    """Adadelta with Keras 3's arguments, defaults and numbers.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule); the paper's is 1.
      rho: decay rate of both running averages, in [0, 1).
      epsilon: ``eps`` >= 0, added under both roots (it also sets the first steps' size).
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``accumulated_grad``, ``accumulated_delta_var`` (Keras's names).
    """

    slot_names = ("accumulated_grad", "accumulated_delta_var")
    rho = Hyperparameter(0.95, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, rho, **_):
        return {"one_minus_rho": 1 - rho}

    def update(self, grad, slots, *, learning_rate, rho, one_minus_rho, epsilon, **_):
        delta, accumulated_grad, accumulated_delta_var = adadelta_update(
            grad, slots["accumulated_grad"], slots["accumulated_delta_var"], learning_rate=learning_rate,
            rho=rho, one_minus_rho=one_minus_rho, epsilon=epsilon)
        return delta, {"accumulated_grad": accumulated_grad, "accumulated_delta_var": accumulated_delta_var}
