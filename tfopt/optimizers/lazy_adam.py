"""LazyAdam (TensorFlow Addons' ``tfa.optimizers.LazyAdam``): Adam (Kingma & Ba, 2015, "Adam: A Method for
Stochastic Optimization", Algorithm 1) whose sparse steps touch only the rows of the gradient.

With slots ``m`` and ``v`` (per variable, start at 0) and t the 1-based step, a dense gradient g steps
every element as ``tfopt.Adam`` does:

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    x <- x - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

A ``tf.IndexedSlices`` gradient with values g_r at rows r (repeated rows summed first) steps those rows
alone, of the variable and of both slots; every other row of x, m and v keeps its value (TFA's semantics):

    m[r] <- b1 * m[r] + (1 - b1) * g_r
    v[r] <- b2 * v[r] + (1 - b2) * g_r^2
    x[r] <- x[r] - lr * (m[r] / (1 - b1^t)) / (sqrt(v[r] / (1 - b2^t)) + eps)

The bias corrections use the global step t, not the number of times a row was touched (as in TFA). This
is not Adam on the dense equivalent of the gradient (Adam also decays the moments of the rows a step does
not touch, and so moves them), but it costs memory traffic proportional to the touched rows: the rule for
embeddings. The base runs it through its ``lazy`` hook (``tfopt.Optimizer.lazy``).

Epsilon form: tfopt's (the paper's), eps outside the bias-corrected root, so that LazyAdam with dense
gradients *is* ``tfopt.Adam``, bit for bit (it subclasses it, native and fused paths included, as TFA's
LazyAdam subclasses Keras's Adam). TFA uses Keras's "epsilon hat" form
``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``, which equals ours with
``eps_tfopt = eps_tfa / sqrt(1 - b2^t)``: the steps differ by about eps / sqrt(v_hat) relative, which with
the default eps = 1e-7 matters only for tiny gradients (a few 1e-4 of the step for gradients near 1e-4).

TFA's ``amsgrad`` argument only accepted False (unsupported); tfopt leaves it out. Weight decay
(``weight_decay=``, off by default; TFA's LazyAdam has none) is the base's and decays the whole variable.
"""

from __future__ import annotations

from tfopt.optimizers.adam import Adam


class LazyAdam(Adam):
    """Adam whose ``tf.IndexedSlices`` steps update only the touched rows of the variable and of ``m``, ``v``.

    Args:
      learning_rate: ``lr`` (number >= 0, ``tf.Variable``, or schedule); TFA's default 0.001.
      beta_1, beta_2: moment decay rates ``b1``, ``b2`` in [0, 1); 0.9 and 0.999.
      epsilon: ``eps`` >= 0, added to ``sqrt(v_hat)`` (the paper's epsilon, see the module doc); 1e-7.
      **kwargs: ``weight_decay``, ``fused``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``name``.

    Slots: ``m``, ``v`` (TFA's names). Dense gradients: exactly ``tfopt.Adam`` (same paths, same numbers).
    """

    lazy = True
