"""Small op helpers shared by the rules.

``divide_by_sqrt(a, b)`` is ``a / sqrt(b)`` with the same bits in a ``tf.function`` as eagerly.
Grappler's arithmetic optimizer rewrites ``a / Sqrt(b)`` into ``a * Rsqrt(b)``
(``SqrtDivToRsqrtMulStage``), which rounds differently (about 1e-7 relative in float32), so
a graph step would differ from the eager one and from Keras's eager step. An ``EnsureShape``
between the two ops (a no-op at run time: it passes the buffer through) hides the ``Sqrt`` from
that rewrite; XLA still sees the plain ops.
"""

from __future__ import annotations

import tensorflow as tf


def divide_by_sqrt(numerator, radicand):
    """``numerator / sqrt(radicand)``, the same ops (and bits) eagerly and in a ``tf.function``."""
    root = tf.sqrt(radicand)
    return numerator / tf.ensure_shape(root, root.shape)
