"""Adam (Kingma & Ba, 2015, Algorithm 1).

With slots ``m`` and ``v`` (per variable, start at 0) and t the 1-based step:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    m_hat = m / (1 - b1^t)
    v_hat = v / (1 - b2^t)
    x <- x - lr * (m_hat / (sqrt(v_hat) + eps))

Epsilon form: eps sits outside the bias-corrected root, as in the paper and
the TensorFlow guide. Keras (and TF's ``ResourceApplyAdam``) use the
"epsilon hat" form ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``,
which equals ours with ``eps_keras = eps * sqrt(1 - b2^t)``; the two agree
closely when eps is tiny and differ early in training when it is not.

By default a step runs tfopt's native op (``tfopt.kernels.native``): the plain ops above,
element by element in one pass over all variables, with the same numbers bit for bit
(without the native ops, the same plain ops in fewer kernels: ``tfopt.kernels.fallback``).
``Adam(fused=True)`` runs TensorFlow's ``ResourceApplyAdam`` kernel with that
epsilon instead: the same update, rounded differently (about 1e-5 relative in
float32; ``tfopt.kernels.fused``). ``fused=False`` runs the plain ops.
"""

from __future__ import annotations

import tensorflow as tf

from tfopt.core import checks
from tfopt.core.hyperparameters import Hyperparameter
from tfopt.core.optimizer import Optimizer
from tfopt.kernels import fallback, fused, native


def adam_update(grad, m, v, *, learning_rate, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
                correction_1, correction_2, epsilon):
    """Return ``(delta, m, v)`` for one variable; x <- x - delta.

    ``one_minus_beta_i = 1 - b_i`` and ``correction_i = 1 - b_i^t`` are computed
    once per step (in float64) by the caller.
    """
    m = beta_1 * m + one_minus_beta_1 * grad                   # first moment estimate
    v = beta_2 * v + one_minus_beta_2 * tf.square(grad)        # second raw moment estimate
    m_hat = m / correction_1                                   # bias corrections
    v_hat = v / correction_2
    delta = learning_rate * (m_hat / (tf.sqrt(v_hat) + epsilon))
    return delta, m, v


class Adam(Optimizer):
    """Adam with the paper's epsilon placement.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule).
      beta_1, beta_2: moment decay rates ``b1``, ``b2`` in [0, 1).
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)``.
      **kwargs: ``fused``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.
        ``fused=True`` runs TensorFlow's ``ResourceApplyAdam`` kernel, many times
        faster on large variables but not bit-identical to the plain ops (it forms
        ``1 - b`` in the variable's dtype: about 1e-5 relative in float32);
        ``fused=None`` (default) runs the native op, bit-identical to the plain ops
        (``tfopt.kernels.native``; where it cannot run, the plain ops in fewer kernels, ``tfopt.kernels.fallback``);
        ``False`` the plain ops.
    """

    slot_names = ("m", "v")
    beta_1 = Hyperparameter(0.9, check=checks.unit_interval)
    beta_2 = Hyperparameter(0.999, check=checks.unit_interval)
    epsilon = Hyperparameter(1e-7, check=checks.non_negative)

    def step_values(self, *, step, beta_1, beta_2, learning_rate, epsilon, **_):
        values = dict(one_minus_beta_1=1 - beta_1, correction_1=1 - beta_1**step,
                      one_minus_beta_2=1 - beta_2, correction_2=1 - beta_2**step)
        if self.fused:  # the fused kernel's step size and epsilon carry the bias corrections
            root = tf.sqrt(values["correction_2"])
            values.update(alpha=learning_rate * root / values["correction_1"], epsilon_hat=epsilon * root)
        return values

    def update(self, grad, slots, *, learning_rate, beta_1, one_minus_beta_1, correction_1, beta_2,
               one_minus_beta_2, correction_2, epsilon, **_):
        delta, m, v = adam_update(grad, slots["m"], slots["v"], learning_rate=learning_rate, beta_1=beta_1,
                                  one_minus_beta_1=one_minus_beta_1, correction_1=correction_1, beta_2=beta_2,
                                  one_minus_beta_2=one_minus_beta_2, correction_2=correction_2, epsilon=epsilon)
        return delta, {"m": m, "v": v}

    def _apply_multi(self, variables, grads, slots, **scalars):
        native.adam(variables, [s["m"] for s in slots], [s["v"] for s in slots], grads, **scalars)

    def _apply_fallback(self, variables, grads, slots, **scalars):
        fallback.adam(variables, [s["m"] for s in slots], [s["v"] for s in slots], grads, **scalars)

    def _apply_fused(self, grad, variable, slots, *, alpha, beta_1, beta_2, epsilon_hat, **_):
        fused.adam(variable, slots["m"], slots["v"], grad, alpha=alpha, beta_1=beta_1, beta_2=beta_2,
                   epsilon_hat=epsilon_hat)
