"""Adamax (Kingma & Ba, 2015, "Adam: A Method for Stochastic Optimization", Section 7.1,
Algorithm 2), as Keras 3's ``keras.optimizers.Adamax``.

With slots ``m`` and ``u`` (per variable, start at 0) and t the 1-based step:

    m <- m + (g - m) * (1 - b1)                  (= b1 * m + (1 - b1) * g)
    u <- max(b2 * u, |g|)                        (exponentially weighted infinity norm)
    x <- x - lr * m / ((1 - b1^t) * (u + eps))

The paper's step is ``lr / (1 - b1^t) * m / u``, without epsilon; Keras adds ``eps`` to ``u`` (so a
variable whose gradients have all been 0 does not divide 0 by 0) and so does tfopt. Keras's slots
are named ``momentum`` and ``norm``; tfopt uses the paper's ``m`` and ``u`` (as tfopt.Adam does).

One deliberate difference: the bias correction ``1 - b1^t`` is formed once per step in float64 (as
tfopt.Adam's), rounded once to the variable's dtype, where Keras raises float32 ``b1`` to the
float32 step in float32. The two differ by about one float32 rounding (1e-7 relative) and are the
same update otherwise: a subclass whose ``step_values`` forms the correction Keras's way gives
Keras's float32 numbers bit for bit (tests/test_adamax.py).
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer


def adamax_update(grad, m, u, *, learning_rate, one_minus_beta_1, beta_2, correction_1, epsilon):
    """Return ``(delta, m, u)`` for one variable; x <- x - delta.

    ``one_minus_beta_1 = 1 - b1`` and ``correction_1 = 1 - b1^t`` are computed once per step
    (in float64) by the caller.
    """
    m = m + (grad - m) * one_minus_beta_1
    u = tf.maximum(beta_2 * u, tf.abs(grad))
    delta = learning_rate * m / (correction_1 * (u + epsilon))
    return delta, m, u


class Adamax(Optimizer):
    """Adamax with Keras 3's arguments, defaults and epsilon placement.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      beta_1: decay rate of the first moment ``b1`` in [0, 1).
      beta_2: decay rate of the infinity norm ``b2`` in [0, 1).
      epsilon: ``eps`` >= 0, added to ``u``.
      **kwargs: ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("m", "u")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, step, beta_1, **_):
        return {"one_minus_beta_1": 1 - beta_1, "correction_1": 1 - beta_1**step}

    def update(self, grad, slots, *, learning_rate, one_minus_beta_1, beta_2, correction_1, epsilon, **_):
        delta, m, u = adamax_update(grad, slots["m"], slots["u"], learning_rate=learning_rate,
                                    one_minus_beta_1=one_minus_beta_1, beta_2=beta_2,
                                    correction_1=correction_1, epsilon=epsilon)
        return delta, {"m": m, "u": u}
