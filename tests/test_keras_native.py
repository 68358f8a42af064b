"""``as_keras()`` in ``model.fit``: outside ``tf.distribute`` a step updates all the variables a native op takes
at once (``KerasOptimizer._distributed_tf_update_step``), with the numbers of Keras's per-variable ``update_step``
and of the tfopt optimizer's own step bit for bit; everything else falls back to ``update_step``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt
from tfopt import transforms
from tfopt.integrations.keras_optimizer import KerasOptimizer
from tfopt.kernels import native

pytestmark = pytest.mark.skipif(native.load() is None, reason="the native ops did not build here")

X = np.random.default_rng(0).normal(size=(48, 4)).astype("float32")
Y = np.random.default_rng(1).normal(size=(48, 2)).astype("float32")
BATCH = 16
EPOCHS = 2

RULES = {  # op: the native op a step of the rule runs (TfoptApplyRule: the compiled rule)
    "adam": (lambda: tfopt.Adam(0.01, epsilon=1e-3), "TfoptApplyAdam"),
    "rmsprop": (lambda: tfopt.RMSprop(0.01, momentum=0.5, centered=True), "TfoptApplyRule"),
    "lion": (lambda: tfopt.Lion(0.01), "TfoptApplyRule"),
    "chain": (lambda: tfopt.chain(transforms.clip_by_global_norm(1.0), transforms.scale_by_adam(),
                                  transforms.add_decayed_weights(0.01), transforms.scale_by_learning_rate(0.01)),
              "TfoptApplyRule"),
}


def make_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])


def fit(keras_opt, native_step=True, model=None, x=X, y=Y, loss="mse", **kw):
    model = model or make_model()
    keras_opt._native = native_step
    model.compile(optimizer=keras_opt, loss=loss, **kw.pop("compile", {}))
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, **kw)
    return model


def custom_loop(opt):
    model, loss_fn = make_model(), keras.losses.MeanSquaredError()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for _ in range(EPOCHS):
        for i in range(0, len(X), BATCH):
            step(X[i : i + BATCH], Y[i : i + BATCH])
    return model


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def slots(keras_opt):
    return [s.numpy() for name in sorted(keras_opt._slot_lists) for s in keras_opt._slot_lists[name]]


@pytest.mark.parametrize("name", list(RULES))
def test_fit_native_equals_per_variable_and_the_custom_loop_bit_for_bit(name):
    make = RULES[name][0]
    fast, slow = make().as_keras(), make().as_keras()
    fast_model, slow_model = fit(fast), fit(slow, native_step=False)
    opt = make()
    loop_model = custom_loop(opt)
    assert_same(fast_model.get_weights(), slow_model.get_weights())
    assert_same(slots(fast), slots(slow))
    assert_same(fast_model.get_weights(), loop_model.get_weights())
    loop_slots = [opt.get_slot(v, slot).numpy() for slot in sorted(fast._slot_lists)
                  for v in loop_model.trainable_variables]
    assert_same(slots(fast), loop_slots)
    assert int(fast.iterations.numpy()) == int(opt.iterations.numpy()) == EPOCHS * len(X) // BATCH


def step_graph(keras_opt, variables, grads):
    """The op types of one ``keras_opt.apply`` traced in a ``tf.function``, and how often ``update_step`` ran."""
    calls = []
    update_step = keras_opt.update_step
    keras_opt.update_step = lambda *a: (calls.append(1), update_step(*a))[1]
    keras_opt.build(variables)
    graph = tf.function(lambda: keras_opt.apply(grads, variables)).get_concrete_function().graph
    return {op.type for op in graph.get_operations()}, len(calls)


@pytest.mark.parametrize("name", list(RULES))
def test_the_step_is_one_native_op_and_no_update_step(name):
    make, op = RULES[name]
    model = make_model()
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    types, calls = step_graph(make().as_keras(), model.trainable_variables, grads)
    assert op in types and calls == 0
    keras_opt = make().as_keras()
    keras_opt._native = False
    types, calls = step_graph(keras_opt, model.trainable_variables, grads)
    assert not any(t.startswith("Tfopt") for t in types) and calls == len(grads)


def test_a_rule_the_compiler_declines_falls_back_to_update_step():
    """Lamb's trust ratio is a reduction: per-variable update_step, the same numbers as the custom loop."""
    model = make_model()
    grads = [tf.ones_like(v) for v in model.trainable_variables]
    types, calls = step_graph(tfopt.Lamb(0.01).as_keras(), model.trainable_variables, grads)
    assert not any(t.startswith("Tfopt") for t in types) and calls == len(grads)
    assert_same(fit(tfopt.Lamb(0.01).as_keras()).get_weights(), custom_loop(tfopt.Lamb(0.01)).get_weights())


def embedding_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                             keras.layers.Flatten(), keras.layers.Dense(2)])


@pytest.mark.parametrize("make", [lambda: tfopt.Adam(0.01), lambda: tfopt.RMSprop(0.01), lambda: tfopt.LazyAdam(0.01)],
                         ids=["adam densified", "rmsprop compiled", "lazy_adam"])
def test_sparse_gradients(make):
    """Embedding gradients are tf.IndexedSlices: Adam's native op takes them densified (as the tfopt step does),
    a compiled rule and LazyAdam leave them to update_step; either way the numbers are the per-variable path's."""
    x = np.random.default_rng(2).integers(0, 5, size=(48, 3)).astype("int32")  # rows 5-9 never touched
    fast, slow = make().as_keras(), make().as_keras()
    a = fit(fast, model=embedding_model(), x=x)
    b = fit(slow, native_step=False, model=embedding_model(), x=x)
    assert_same(a.get_weights(), b.get_weights())
    assert_same(slots(fast), slots(slow))


@pytest.mark.parametrize("options", [
    {"weight_decay": 0.1, "clipnorm": 0.5},
    {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 2},
    {"gradient_accumulation_steps": 2},
    {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)},
], ids=["weight_decay_clipnorm", "ema", "gradient_accumulation", "schedule"])
def test_keras_options_keep_their_numbers(options):
    """Keras's weight decay and clipping (before the step), EMA (after), gradient accumulation (the step in a
    cond) and schedules wrap the native step as they wrap update_step."""
    def make():
        return KerasOptimizer("Adam", {"epsilon": 1e-3}, **{"learning_rate": 0.01, **options})

    fast, slow = make(), make()
    assert_same(fit(fast).get_weights(), fit(slow, native_step=False).get_weights())
    assert_same([v.numpy() for v in fast.variables], [v.numpy() for v in slow.variables])


@pytest.mark.parametrize("make", [lambda: tfopt.Adam(0.01), lambda: tfopt.RMSprop(0.01)], ids=["adam", "rmsprop"])
def test_under_xla_the_step_is_update_step(make):
    """``jit_compile=True``: XLA knows no custom op, so every variable takes update_step."""
    fast, slow = make().as_keras(), make().as_keras()
    assert_same(fit(fast, compile={"jit_compile": True}).get_weights(),
                fit(slow, native_step=False, compile={"jit_compile": True}).get_weights())


def test_run_eagerly_and_mixed_precision():
    fast, slow = tfopt.RMSprop(0.01).as_keras(), tfopt.RMSprop(0.01).as_keras()
    assert_same(fit(fast, compile={"run_eagerly": True}).get_weights(),
                fit(slow, native_step=False, compile={"run_eagerly": True}).get_weights())
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        fast, slow = tfopt.Adam(0.01).as_keras(), tfopt.Adam(0.01).as_keras()
        a, b = fit(fast), fit(slow, native_step=False)
        assert isinstance(a.optimizer, keras.optimizers.LossScaleOptimizer)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert_same(a.get_weights(), b.get_weights())
    assert_same(slots(fast), slots(slow))
