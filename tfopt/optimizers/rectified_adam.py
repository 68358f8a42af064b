"""Rectified Adam, RAdam (Liu, Jiang, He, Chen, Liu, Gao & Han, 2020, "On the Variance of the Adaptive
Learning Rate and Beyond", ICLR, Algorithm 2), as TensorFlow Addons' ``tfa.optimizers.RectifiedAdam``.

With slots ``m``, ``v`` (and ``vhat`` with ``amsgrad``; all start at 0) and t the 1-based step:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    vhat <- max(vhat, v)                                  (amsgrad only; then v below is vhat)
    m_hat = m / (1 - b1^t)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)               (length of the approximated SMA)
    r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
    u = r_t * m_hat / (sqrt(v / (1 - b2^t)) + eps)        if rho_t >= sma_threshold (the variance is tractable)
    u = m_hat                                             otherwise (SGD with momentum)
    x <- x - lr_t * u

The paper's threshold is 4 (``rho_t > 4``); TFA's ``sma_threshold`` defaults to 5. A threshold below 4
lets steps with 2 < rho_t < 4 take the root of a negative number (NaN), as in TFA. Epsilon sits outside the
bias-corrected root, as in the paper, TFA and ``tfopt.Adam``.

Warmup (TFA's; on when ``total_steps > 0``): with W = total_steps * warmup_proportion and
D = max(total_steps - W, 1),

    lr_t = lr * t / W                                     if t <= W
    lr_t = lr + (min_lr - lr) * min(t - W, D) / D         otherwise

(``lr_t = lr`` when ``total_steps`` is 0). ``lr_t`` is this step's learning rate for everything, so weight
decay (``weight_decay=``, the base's, ``x <- x - x * wd * lr_t`` before the update) is TFA's coupled
``x <- x - lr_t * (u + wd * x)``: the same numbers up to rounding. TFA decays only the touched rows of a
sparse gradient; tfopt densifies sparse gradients (a step with them is the dense step), as TFA does for the
moments.

rho_t, r_t, the choice of branch and lr_t are computed once per step in float64 (TFA: in the variable's
dtype); ``total_steps``, ``warmup_proportion``, ``min_lr`` and ``sma_threshold`` are hyperparameters
(changeable between steps without retracing), so warmup switches on whenever ``total_steps`` is > 0.
TFA's other differences: ``weight_decay`` may be a schedule there (a number here), and ``lr``/``decay``
keywords are gone, as in Keras 3.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter, Option
from tfopt.core.optimizer import Optimizer


def rectified_adam_update(grad, m, v, vhat, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                          correction_1, correction_2, epsilon, rectifier, rectified, amsgrad: bool):
    """Return ``(delta, m, v, vhat)`` for one variable; x <- x - delta.

    ``rectifier`` is r_t and ``rectified`` 1 when rho_t >= sma_threshold, else 0 (both per step).
    ``vhat`` is ignored (and returned as is) unless ``amsgrad``.
    """
    m = beta_1 * m + one_minus_beta_1 * grad
    v = beta_2 * v + one_minus_beta_2 * tf.square(grad)
    if amsgrad:
        vhat = tf.maximum(vhat, v)
    m_hat = m / correction_1
    root = tf.sqrt((vhat if amsgrad else v) / correction_2)
    step = tf.where(rectified > 0, rectifier * m_hat / (root + epsilon), m_hat)
    return learning_rate * step, m, v, vhat


class RectifiedAdam(Optimizer):
    """RAdam with TFA's arguments, defaults and formulas (warmup included).

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule); 0.001.
      beta_1, beta_2: moment decay rates in [0, 1); 0.9, 0.999.
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)``; 1e-7.
      amsgrad: keep the maximum of ``v`` (slot ``vhat``) and use it instead (not in the paper); False.
      sma_threshold: rectify (the adaptive step) when rho_t >= this, >= 0; 5.0.
      total_steps: > 0 turns the warmup-then-linear-decay learning rate on, >= 0; 0.
      warmup_proportion: the warmup's share of ``total_steps``, in [0, 1]; 0.1.
      min_lr: the learning rate reached at ``total_steps`` after warmup, >= 0; 0.0.
      **kwargs: ``weight_decay`` (a number; TFA's coupled decay, see the module doc), ``clipnorm``,
        ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``m``, ``v`` and, with ``amsgrad``, ``vhat`` (TFA's names).
    """

    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)
    amsgrad = Option(False, check=checks.boolean)
    sma_threshold = Hyperparameter(5.0, check=checks.non_negative)
    total_steps = Hyperparameter(0, check=checks.non_negative)
    warmup_proportion = Hyperparameter(0.1, check=checks.closed_unit_interval)
    min_lr = Hyperparameter(0.0, check=checks.non_negative)

    @property
    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v", "vhat") if self.amsgrad else ("m", "v")

    def step_values(self, *, step, learning_rate, beta_1, beta_2, sma_threshold, total_steps, warmup_proportion,
                    min_lr, **_):
        power_2 = beta_2**step
        sma_inf = 2 / (1 - beta_2) - 1
        sma_t = sma_inf - 2 * step * power_2 / (1 - power_2)
        rectified = sma_t >= sma_threshold
        radicand = (sma_t - 4) / (sma_inf - 4) * (sma_t - 2) / (sma_inf - 2) * sma_inf / sma_t
        rectifier = tf.where(rectified, tf.sqrt(tf.where(rectified, radicand, 1.0)), 0.0)
        warmup_steps = total_steps * warmup_proportion
        decay_steps = tf.maximum(total_steps - warmup_steps, 1)
        warm = tf.where(step <= warmup_steps, learning_rate * (step / tf.maximum(warmup_steps, 1e-300)),
                        learning_rate + (min_lr - learning_rate) / decay_steps
                        * tf.minimum(step - warmup_steps, decay_steps))
        return dict(learning_rate=tf.where(total_steps > 0, warm, learning_rate),  # lr_t, also weight decay's
                    one_minus_beta_1=1 - beta_1, correction_1=1 - beta_1**step,
                    one_minus_beta_2=1 - beta_2, correction_2=1 - power_2,
                    rectifier=rectifier, rectified=tf.cast(rectified, tf.float64))

    def update(self, grad, slots, *, learning_rate, beta_1, one_minus_beta_1, correction_1, beta_2,
               one_minus_beta_2, correction_2, epsilon, rectifier, rectified, **_):
        delta, m, v, vhat = rectified_adam_update(
            grad, slots["m"], slots["v"], slots.get("vhat"), learning_rate=learning_rate, beta_1=beta_1,
            one_minus_beta_1=one_minus_beta_1, beta_2=beta_2, one_minus_beta_2=one_minus_beta_2,
            correction_1=correction_1, correction_2=correction_2, epsilon=epsilon, rectifier=rectifier,
            rectified=rectified, amsgrad=self.amsgrad)
        new_slots = {"m": m, "v": v}
        if self.amsgrad:
            new_slots["vhat"] = vhat
        return delta, new_slots
