"""``tfopt.ApplyIfFinite``: skip the calls whose gradients are not all finite (Optax's ``apply_if_finite``)."""

from __future__ import annotations

import tensorflow as tf

from tfopt.core.wrapper import Wrapper, wrapper_signature

__all__ = ["ApplyIfFinite"]


def _all_finite(grads: list) -> tf.Tensor:
    """Whether every entry of every gradient is finite (an ``IndexedSlices``'s values)."""
    return tf.reduce_all(tf.stack([
        tf.reduce_all(tf.math.is_finite(g.values if isinstance(g, tf.IndexedSlices) else g)) for g in grads]))


class ApplyIfFinite(Wrapper):
    """Step ``optimizer`` only when all the call's gradients are finite.

    A call whose gradients hold a NaN or an Inf changes nothing: no variable, no slot, no step count (neither
    ``iterations`` nor the inner optimizer's); it adds one to ``skipped_steps`` (an int64 variable, saved in
    checkpoints). Any other call steps the inner optimizer as usual (``iterations`` is the inner optimizer's). The test
    and the step are one ``tf.cond`` (the inner slots are built before it), eagerly and in ``tf.function``.
    The gradients are tested as given (before the inner optimizer's clipping). Extra state: none per variable.

    Args:
      optimizer: the ``tfopt.Optimizer`` to step.
      name: the module name (default ``"ApplyIfFinite"``).
    """

    def __init__(self, optimizer, *, name=None):
        super().__init__(optimizer, name=name)
        with tf.init_scope():
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")

    def _apply(self, strategy, pairs: list[tuple]) -> tf.Variable:
        self.build([v for _, v in pairs])  # no variable may be created inside the cond

        def step():
            self._inner_step(pairs)  # (adds one to iterations, the inner optimizer's)
            return tf.constant(True)

        def skip():
            self.skipped_steps.assign_add(1)
            return tf.constant(False)

        tf.cond(_all_finite([g for g, _ in pairs]), step, skip)
        return self.iterations


ApplyIfFinite.__signature__ = wrapper_signature(ApplyIfFinite)
