"""My optimizers, written with tfopt's public extension API."""

import tensorflow as tf

import tfopt


class RMSprop(tfopt.Optimizer):
    """v <- rho*v + (1-rho)*g^2;  x <- x - lr * g / (sqrt(v) + eps)"""

    slot_names = ("v",)
    rho = tfopt.Hyperparameter(0.9, check=tfopt.checks.unit_interval)
    epsilon = tfopt.Hyperparameter(1e-7, check=tfopt.checks.non_negative)

    def update(self, grad, slots, *, learning_rate, rho, epsilon, **_):
        v = rho * slots["v"] + (1 - rho) * tf.square(grad)
        return learning_rate * grad / (tf.sqrt(v) + epsilon), {"v": v}
