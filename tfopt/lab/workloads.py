"""The training suite's workloads: small real models on data that ships with the dependencies.

Each workload is a data set (fixed: split and scaling never depend on the trial), a Keras 3
model built from a seed, a training loss, an optional accuracy, a step budget and a fixed
*validation target*. A trial reaches the target at the first evaluation (every ``eval_every``
steps) where the validation measure is at least as good as ``target``:

================  ====================================================================  ==================
workload          what                                                                  target
================  ====================================================================  ==================
logreg_cancer     logistic regression, breast-cancer data (30 features), L2 penalty,    val. loss <= 0.10
                  full batch; convex: the gap to scikit-learn's optimum is reported
linreg_diabetes   linear regression, diabetes data (10 features), full batch;           val. loss <= 0.245
                  the optimum is the least-squares solution (closed form)
mlp_digits        MLP 64-64-10 on the 8x8 digits, batches of 64                         val. acc. >= 0.96
cnn_digits        conv 3x3x16 + max-pool + dense on the 8x8 digits, batches of 64       val. acc. >= 0.96
autoencoder_fit   autoencoder 64-16-64 on the digits, trained by ``model.fit`` through  val. loss <= 0.030
                  ``opt.as_keras()`` (the one workload not in a custom loop)
embedding_sparse  bag of words: Embedding(2000, 16) + mean + dense on Zipf-distributed  val. acc. >= 0.85
                  tokens (seeded synthetic data); gradients are ``tf.IndexedSlices``
noisy_quadratic   the noisy quadratic model (Zhang et al. 2019): curvatures h_i = 1/i,  val. loss <= 0.05
                  gradient noise of covariance H
================  ====================================================================  ==================

The losses are means over the batch:

* logistic: ``mean(softplus(z) - y z) + (lam / 2) ||w||^2`` with ``lam = 1 / (C n)``, C = 1, the
  objective scikit-learn's ``LogisticRegression(C=1)`` minimises divided by ``C n`` (bias not penalised);
* linear: ``mean((x w + b - y)^2) / 2``; its minimum is the least-squares solution's;
* digits: softmax cross-entropy; autoencoder: mean squared reconstruction error of pixels in [0, 1];
* embedding: sigmoid cross-entropy;
* noisy quadratic: ``sum_i h_i x_i^2 / 2 + sum_i e_i x_i`` with ``e ~ N(0, H / B)`` drawn each step
  (B = 8), so the stochastic gradient is ``H x + e``; its validation loss is the noise-free
  ``sum_i h_i x_i^2 / 2`` (minimum 0).

The validation loss of the two convex workloads is the data loss on held-out rows (no penalty).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np

__all__ = ["Workload", "Data", "ALL", "names", "get", "convex_optimum"]

DATA_SEED = 0
"""Seed of the fixed train/validation splits and of the synthetic data (never the trial's)."""


@dataclasses.dataclass(frozen=True)
class Data:
    """A workload's arrays (float32 inputs); ``y`` may be float (regression) or int (classes)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclasses.dataclass(frozen=True)
class Workload:
    """One training task of the suite (see the module docstring).

    ``build_model(data)`` makes the Keras model (call ``keras.utils.set_random_seed`` first);
    ``loss(model, x, y, training)`` is the training objective and ``data_loss`` the validation
    measure (the same without a penalty); ``accuracy(model, x, y)`` or None. ``target`` is reached
    when ``val_accuracy >= target`` (``target_on="accuracy"``) or ``val_loss <= target``.
    ``batch_size=None`` trains on the full training set each step. ``sample_batch(data, rng, step)``
    replaces the usual shuffled batches (the noisy quadratic draws its noise there).
    """

    name: str
    description: str
    load: Callable[[], Data]
    build_model: Callable
    loss: Callable
    data_loss: Callable
    accuracy: Callable | None
    target: float
    target_on: str  # "accuracy" or "loss"
    steps: int
    quick_steps: int
    eval_every: int
    batch_size: int | None = None
    trainer: str = "loop"  # or "fit": model.fit through opt.as_keras()
    sample_batch: Callable | None = None
    convex: bool = False

    @property
    def target_text(self) -> str:
        if self.target_on == "accuracy":
            return f"val. acc. >= {self.target:g}"
        return f"val. loss <= {self.target:g}"

    def reached(self, val_loss: float, val_accuracy: float | None) -> bool:
        """Whether validation measures meet the target (NaN never does)."""
        if self.target_on == "accuracy":
            return val_accuracy is not None and val_accuracy >= self.target
        return val_loss <= self.target


# --------------------------------------------------------------------------- data
def _split(x: np.ndarray, y: np.ndarray, val_fraction: float = 0.2) -> tuple:
    order = np.random.default_rng(DATA_SEED).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    return x[order[n_val:]], y[order[n_val:]], x[order[:n_val]], y[order[:n_val]]


def _standardized(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    return ((x_train - mean) / std).astype(np.float32), ((x_val - mean) / std).astype(np.float32)


@functools.cache
def load_cancer() -> Data:
    """Breast-cancer data (569 x 30, binary): 80/20 split, features standardised on the training rows."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    xt, yt, xv, yv = _split(x, y.astype(np.float32))
    xt, xv = _standardized(xt, xv)
    return Data(xt, yt[:, None], xv, yv[:, None])


@functools.cache
def load_diabetes() -> Data:
    """Diabetes data (442 x 10, a disease-progression score): 80/20 split, x and y standardised on training rows."""
    from sklearn.datasets import load_diabetes as load

    x, y = load(return_X_y=True)
    xt, yt, xv, yv = _split(x, y)
    xt, xv = _standardized(xt, xv)
    mean, std = yt.mean(), yt.std()
    yt, yv = (((v - mean) / std).astype(np.float32)[:, None] for v in (yt, yv))
    return Data(xt, yt, xv, yv)


@functools.cache
def load_digits() -> Data:
    """The 8x8 digits (1797 x 64, ten classes): 80/20 split, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as load

    x, y = load(return_X_y=True)
    xt, yt, xv, yv = _split((x / 16.0).astype(np.float32), y.astype(np.int32))
    return Data(xt, yt, xv, yv)


@functools.cache
def load_digit_images() -> Data:
    """The digits as 8x8x1 images (for the convolutional net)."""
    d = load_digits()
    return Data(d.x_train.reshape(-1, 8, 8, 1), d.y_train, d.x_val.reshape(-1, 8, 8, 1), d.y_val)


@functools.cache
def load_digits_autoencoder() -> Data:
    d = load_digits()
    return Data(d.x_train, d.x_train, d.x_val, d.x_val)


VOCAB, SEQUENCE, EMBEDDING = 2000, 10, 16


@functools.cache
def load_tokens() -> Data:
    """Synthetic bags of words: 10 tokens each from a Zipf(1.2) law over 2,000 tokens; each token has a hidden
    score ~ N(0, 1) and the label is whether a sequence's scores sum above 0. 4,000 training, 1,000 validation
    sequences. Most tokens are rare: a batch's gradient touches few rows of the embedding."""
    rng = np.random.default_rng(DATA_SEED)
    ranks = np.arange(1, VOCAB + 1)
    p = ranks ** -1.2
    tokens = rng.choice(VOCAB, size=(5000, SEQUENCE), p=p / p.sum()).astype(np.int32)
    scores = rng.normal(size=VOCAB)
    y = (scores[tokens].sum(axis=1) > 0).astype(np.float32)[:, None]
    return Data(tokens[:4000], y[:4000], tokens[4000:], y[4000:])


NQM_DIM, NQM_BATCH = 50, 8
NQM_CURVATURES = 1.0 / np.arange(1, NQM_DIM + 1)


@functools.cache
def load_nqm() -> Data:
    """The noisy quadratic model has no data: inputs are the per-step noise; validation uses zero noise."""
    zeros = np.zeros((1, NQM_DIM), np.float32)
    return Data(zeros, zeros, zeros, zeros)


def _nqm_batch(data: Data, rng: np.random.Generator, step: int):
    noise = rng.normal(size=(1, NQM_DIM)) * np.sqrt(NQM_CURVATURES / NQM_BATCH)
    return noise.astype(np.float32), np.zeros((1, NQM_DIM), np.float32)


# ------------------------------------------------------------------------- models
def _dense_model(inputs: int, layers: list):
    import keras

    return keras.Sequential([keras.Input((inputs,)), *layers])


def _linear_model(data: Data):
    import keras

    return _dense_model(data.x_train.shape[1], [keras.layers.Dense(1)])


def _mlp(data: Data):
    import keras

    return _dense_model(64, [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def _cnn(data: Data):
    import keras

    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                             keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(10)])


def _autoencoder(data: Data):
    import keras

    return _dense_model(64, [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(64, activation="sigmoid")])


def _bag_of_words(data: Data):
    import keras

    return keras.Sequential([keras.Input((SEQUENCE,), dtype="int32"), keras.layers.Embedding(VOCAB, EMBEDDING),
                             keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])


def _nqm_model(data: Data):
    import keras

    class NoisyQuadratic(keras.layers.Layer):
        """x (the parameters, N(0, 1) at the start); called on noise e: ``sum h x^2 / 2 + e . x`` per row."""

        def build(self, input_shape):
            self.x = self.add_weight(shape=(NQM_DIM,), initializer=keras.initializers.RandomNormal(stddev=1.0),
                                     name="x")

        def call(self, noise):
            h = keras.ops.convert_to_tensor(NQM_CURVATURES.astype(np.float32))
            return keras.ops.sum(0.5 * h * self.x * self.x + noise * self.x, axis=-1)

    return keras.Sequential([keras.Input((NQM_DIM,)), NoisyQuadratic()])


# ------------------------------------------------------------------------- losses
def _logistic_data_loss(model, x, y, training=False):
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=model(x, training=training)))


def _logistic_penalty(model):
    import tensorflow as tf

    kernel = model.layers[0].kernel
    return 0.5 * LOGREG_L2 * tf.reduce_sum(tf.square(kernel))


def _logistic_loss(model, x, y, training=False):
    return _logistic_data_loss(model, x, y, training) + _logistic_penalty(model)


def _binary_accuracy(model, x, y):
    import tensorflow as tf

    return tf.reduce_mean(tf.cast(tf.equal(tf.cast(model(x) > 0, y.dtype), y), tf.float32))


def _squared_loss(model, x, y, training=False):
    import tensorflow as tf

    return 0.5 * tf.reduce_mean(tf.square(model(x, training=training) - y))


def _mse(model, x, y, training=False):
    import tensorflow as tf

    return tf.reduce_mean(tf.square(model(x, training=training) - y))


def _softmax_loss(model, x, y, training=False):
    import tensorflow as tf

    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x, training=training)))


def _class_accuracy(model, x, y):
    import tensorflow as tf

    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(model(x), axis=-1, output_type=y.dtype), y), tf.float32))


def _nqm_loss(model, x, y, training=False):
    import tensorflow as tf

    return tf.reduce_mean(model(x, training=training))


LOGREG_C = 1.0
LOGREG_N = 455
"""Training rows of the breast-cancer split (569 - 114); ``_optimum`` checks it."""
LOGREG_L2 = 1.0 / (LOGREG_C * LOGREG_N)


def convex_optimum(name: str) -> float:
    """The minimum of a convex workload's training objective, in float64 (NumPy / scikit-learn).

    ``logreg_cancer``: scikit-learn's ``LogisticRegression(C=1, tol=1e-12)`` (lbfgs), its objective divided by
    ``C n``; ``linreg_diabetes``: the least-squares solution ``numpy.linalg.lstsq``.
    """
    return _optimum(name)


@functools.cache
def _optimum(name: str) -> float:
    if name == "logreg_cancer":
        from sklearn.linear_model import LogisticRegression

        d = load_cancer()
        x, y = d.x_train.astype(np.float64), d.y_train[:, 0].astype(np.float64)
        if len(x) != LOGREG_N:
            raise RuntimeError(f"the breast-cancer split has {len(x)} training rows, not {LOGREG_N}")
        fit = LogisticRegression(C=LOGREG_C, tol=1e-12, max_iter=10_000).fit(x, y)
        return logistic_objective(fit.coef_[0], fit.intercept_[0], x, y)
    if name == "linreg_diabetes":
        d = load_diabetes()
        x = np.hstack([d.x_train.astype(np.float64), np.ones((len(d.x_train), 1))])
        y = d.y_train[:, 0].astype(np.float64)
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        return float(0.5 * np.mean((x @ w - y) ** 2))
    raise ValueError(f"{name!r} has no known optimum; the convex workloads are logreg_cancer, linreg_diabetes")


def logistic_objective(w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray) -> float:
    """``mean(softplus(z) - y z) + (lam / 2) ||w||^2``, z = x w + b, in float64."""
    z = x @ np.asarray(w, np.float64) + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * LOGREG_L2 * np.sum(np.square(w)))


def convex_gap(name: str, model) -> float:
    """Training objective at the model's weights (float64) minus the optimum."""
    weights = [np.asarray(v, np.float64) for v in model.get_weights()]
    w, b = weights[0][:, 0], float(weights[1][0])
    if name == "logreg_cancer":
        d = load_cancer()
        value = logistic_objective(w, b, d.x_train.astype(np.float64), d.y_train[:, 0].astype(np.float64))
    else:
        d = load_diabetes()
        value = float(0.5 * np.mean((d.x_train.astype(np.float64) @ w + b - d.y_train[:, 0]) ** 2))
    return value - _optimum(name)


# ---------------------------------------------------------------------- registry
ALL: dict[str, Workload] = {w.name: w for w in (
    Workload("logreg_cancer", "logistic regression, breast cancer, L2 (convex)", load_cancer, _linear_model,
             _logistic_loss, _logistic_data_loss, _binary_accuracy, target=0.10, target_on="loss", steps=400,
             quick_steps=200, eval_every=10, convex=True),
    Workload("linreg_diabetes", "linear regression, diabetes (convex, closed form)", load_diabetes, _linear_model,
             _squared_loss, _squared_loss, None, target=0.245, target_on="loss", steps=400, quick_steps=200,
             eval_every=10, convex=True),
    Workload("mlp_digits", "MLP 64-64-10, 8x8 digits", load_digits, _mlp, _softmax_loss, _softmax_loss,
             _class_accuracy, target=0.96, target_on="accuracy", steps=600, quick_steps=240, eval_every=20,
             batch_size=64),
    Workload("cnn_digits", "conv net, 8x8 digits", load_digit_images, _cnn, _softmax_loss, _softmax_loss,
             _class_accuracy, target=0.96, target_on="accuracy", steps=600, quick_steps=240, eval_every=20,
             batch_size=64),
    Workload("autoencoder_fit", "autoencoder 64-16-64, digits, model.fit via as_keras()", load_digits_autoencoder,
             _autoencoder, _mse, _mse, None, target=0.030, target_on="loss", steps=600, quick_steps=240,
             eval_every=20, batch_size=64, trainer="fit"),
    Workload("embedding_sparse", "embedding bag of words (sparse gradients)", load_tokens, _bag_of_words,
             lambda m, x, y, training=False: _logistic_data_loss(m, x, y, training),
             _logistic_data_loss, _binary_accuracy, target=0.85, target_on="accuracy", steps=600, quick_steps=240,
             eval_every=20, batch_size=64),
    Workload("noisy_quadratic", "noisy quadratic model, 50 dims, h_i = 1/i", load_nqm, _nqm_model, _nqm_loss,
             _nqm_loss, None, target=0.05, target_on="loss", steps=600, quick_steps=240, eval_every=10,
             batch_size=1, sample_batch=_nqm_batch),
)}


def names() -> list[str]:
    return list(ALL)


def get(name: str | Workload) -> Workload:
    """A workload by name (or the workload itself); ``ValueError`` naming the choices otherwise."""
    if isinstance(name, Workload):
        return name
    if name not in ALL:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(ALL)}")
    return ALL[name]
