"""Nadam, Adam with Nesterov momentum (Dozat, 2016, "Incorporating Nesterov Momentum into
Adam", Algorithm 2, with its momentum schedule).

With slots ``m`` and ``v`` (per variable, start at 0), t the 1-based step, the momentum
schedule ``u_i = b1 * (1 - 0.5 * 0.96^i)`` and its products ``U_t = u_1 * ... * u_t``:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    m_hat = u_{t+1} * m / (1 - U_{t+1}) + (1 - u_t) * g / (1 - U_t)
    v_hat = v / (1 - b2^t)
    x <- x - lr * m_hat / (sqrt(v_hat) + eps)

The schedule is Keras 3's, ``0.96^i`` (the paper suggests ``0.96^(i/250)``, Keras 2's
``schedule_decay=0.004``). The coefficients of m and g in m_hat and ``1 - b2^t`` are float64
step values, computed once per step from t and this step's b1 and b2:
``U_t = b1^t * prod_{i<=t} (1 - 0.5 * 0.96^i)``, whose factors are 1 in float64 beyond
i = 1024 (``0.5 * 0.96^1024 < 2^-61``), so the product has a fixed cost and static shapes.

``keras.optimizers.Nadam`` has the same arguments and defaults (``learning_rate=0.001``,
``beta_1=0.9``, ``beta_2=0.999``, ``epsilon=1e-7``, ``weight_decay=None``: the base
optimizer's, applied as Keras does) and, despite its docstring's "epsilon hat", the same
epsilon placement as here (the paper's: outside the bias-corrected root), so the two agree
for every eps, to float32 rounding: Keras accumulates ``U_t`` in a float32 variable, step by
step with each step's b1 (the same number while b1 is constant), forms the powers in float32
and updates the moments as ``m + (g - m) * (1 - b1)``.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer

_SCHEDULE_TERMS = 1024
"""Factors of the momentum product computed; beyond them ``1 - 0.5 * 0.96^i`` rounds to 1 in float64."""


def momentum_product(step, beta_1):
    """``U_t = prod_{i=1..t} b1 * (1 - 0.5 * 0.96^i)`` in float64 (t a float64 scalar; static shapes, XLA-safe)."""
    i = tf.range(1, _SCHEDULE_TERMS + 1, dtype=tf.float64)
    factors = tf.where(i <= step, 1 - 0.5 * tf.pow(tf.constant(0.96, tf.float64), i), tf.ones_like(i))
    return beta_1**step * tf.reduce_prod(factors)


def nadam_update(grad, m, v, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2, coefficient_m,
                 coefficient_g, correction_2, epsilon):
    """Return ``(delta, m, v)`` for one variable; x <- x - delta.

    ``coefficient_m = u_{t+1} / (1 - U_{t+1})``, ``coefficient_g = (1 - u_t) / (1 - U_t)`` and
    ``correction_2 = 1 - b2^t`` are computed once per step (in float64) by the caller.
    """
    m = beta_1 * m + one_minus_beta_1 * grad
    v = beta_2 * v + one_minus_beta_2 * tf.square(grad)
    m_hat = coefficient_m * m + coefficient_g * grad
    v_hat = v / correction_2
    return learning_rate * m_hat / (tf.sqrt(v_hat) + epsilon), m, v


class Nadam(Optimizer):
    """Nadam: Adam with Nesterov momentum and Dozat's momentum schedule.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      beta_1, beta_2: moment decay rates ``b1``, ``b2`` in [0, 1).
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)``.
      **kwargs: ``weight_decay`` (the base optimizer's, as Keras's: decoupled, before the step),
        ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
    """

    slot_names = ("m", "v")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, step, beta_1, beta_2, **_):
        u_t = beta_1 * (1 - 0.5 * tf.pow(tf.constant(0.96, tf.float64), step))
        u_next = beta_1 * (1 - 0.5 * tf.pow(tf.constant(0.96, tf.float64), step + 1))
        product = momentum_product(step, beta_1)
        return dict(one_minus_beta_1=1 - beta_1, one_minus_beta_2=1 - beta_2, correction_2=1 - beta_2**step,
                    coefficient_m=u_next / (1 - product * u_next), coefficient_g=(1 - u_t) / (1 - product))

    def update(self, grad, slots, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
               coefficient_m, coefficient_g, correction_2, epsilon, **_):
        delta, m, v = nadam_update(grad, slots["m"], slots["v"], learning_rate=learning_rate, beta_1=beta_1,
                                   one_minus_beta_1=one_minus_beta_1, beta_2=beta_2,
                                   one_minus_beta_2=one_minus_beta_2, coefficient_m=coefficient_m,
                                   coefficient_g=coefficient_g, correction_2=correction_2, epsilon=epsilon)
        return delta, {"m": m, "v": v}
