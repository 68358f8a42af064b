"""weight_decay= and exclude_from_weight_decay() on every optimizer, as in Keras 3."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfopt

RNG = np.random.default_rng(0)
X0 = RNG.normal(size=(3, 4)).astype("float32")
GRADS = [RNG.normal(size=(3, 4)).astype("float32") for _ in range(20)]


@pytest.mark.parametrize("fused", [None, False, True])
def test_gradient_descent_equals_keras_sgd_bit_for_bit(fused):
    """Keras: x <- x - x*wd*lr (float32), then x <- x - g*lr; the same ops in the same order here."""
    x = tf.Variable(X0)
    ours = tfopt.GradientDescent(0.1, weight_decay=0.05, fused=fused)
    y = keras.Variable(X0)
    theirs = keras.optimizers.SGD(0.1, weight_decay=0.05)
    for g in GRADS:
        ours.apply_gradients([(tf.constant(g), x)])
        theirs.apply_gradients([(tf.constant(g), y)])
        np.testing.assert_array_equal(x.numpy(), keras.ops.convert_to_numpy(y))


def _numpy_adam(x, grads, lr, wd, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Decay, then Adam's step (the paper's, with tfopt/Keras's epsilon outside the square root)."""
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        x = x - x * wd * lr
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        m_hat, v_hat = m / (1 - beta_1 ** t), v / (1 - beta_2 ** t)
        x = x - lr * m_hat / (np.sqrt(v_hat) + epsilon)
    return x


@pytest.mark.parametrize("fused", [None, False, True])
def test_adam_equals_numpy_reference(fused):
    """float64 variables, so the only difference from the float64 NumPy reference is the order of roundings."""
    x0, grads = X0.astype("float64"), [g.astype("float64") for g in GRADS]
    x = tf.Variable(x0)
    opt = tfopt.Adam(0.01, weight_decay=0.1, fused=fused)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), x)])
    np.testing.assert_allclose(x.numpy(), _numpy_adam(x0, grads, 0.01, 0.1), rtol=1e-12, atol=1e-15)


def test_learning_rate_schedule_value_of_the_step():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    x = tf.Variable(X0.astype("float64"))
    opt = tfopt.GradientDescent(schedule, weight_decay=0.2)
    want = X0.astype("float64")
    for step, g in enumerate(GRADS[:4]):
        lr = float(keras.ops.convert_to_numpy(schedule(step)))  # (Keras's schedule computes in float32)
        assert lr == pytest.approx(0.1 * 0.5 ** step, rel=1e-6)
        want = want - want * 0.2 * lr
        want = want - lr * g.astype("float64")
        opt.apply_gradients([(tf.constant(g.astype("float64")), x)])
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-14)


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, bias_initializer="ones")])
    return model


def _zero_step(opt, variables):
    """A step with zero gradients: with SGD only the weight decay moves the variables."""
    opt.apply_gradients([(tf.zeros_like(tf.convert_to_tensor(v)), v) for v in variables])


@pytest.mark.parametrize("how", ["var_list", "var_names"])
def test_exclusion_on_a_keras_model(how):
    model = _model()
    dense = model.layers[0]
    kernel, bias = keras.ops.convert_to_numpy(dense.kernel), keras.ops.convert_to_numpy(dense.bias)
    opt = tfopt.GradientDescent(0.1, weight_decay=0.5)
    if how == "var_list":
        opt.exclude_from_weight_decay(var_list=[dense.bias])
    else:
        opt.exclude_from_weight_decay(var_names=["bias"])
    _zero_step(opt, model.trainable_variables)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.bias), bias)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.kernel), kernel - kernel * np.float32(0.5)
                                  * np.float32(0.1))


@pytest.mark.parametrize("how", ["var_list", "var_names"])
def test_exclusion_on_tf_variables(how):
    a, b = tf.Variable(X0, name="weights"), tf.Variable(X0, name="norm_scale")
    opt = tfopt.Adam(0.1, weight_decay=0.5)
    if how == "var_list":
        opt.exclude_from_weight_decay(var_list=[b])
    else:
        opt.exclude_from_weight_decay(var_names=["norm"])
    reference = tfopt.Adam(0.1)  # b is excluded: it takes Adam's plain steps
    c = tf.Variable(X0)
    for g in GRADS[:3]:
        opt.apply_gradients([(tf.constant(g), a), (tf.constant(g), b)])
        reference.apply_gradients([(tf.constant(g), c)])
    np.testing.assert_array_equal(b.numpy(), c.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


def test_exclusion_only_before_the_first_step():
    x = tf.Variable(X0)
    opt = tfopt.GradientDescent(0.1, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["nothing"])
    opt.exclude_from_weight_decay(var_list=[x])  # replaces the previous call's, as in Keras
    _zero_step(opt, [x])
    np.testing.assert_array_equal(x.numpy(), X0)
    with pytest.raises(ValueError, match="before the optimizer's first step"):
        opt.exclude_from_weight_decay(var_names=["x"])
    with pytest.raises(TypeError, match="not a variable"):
        tfopt.Adam().exclude_from_weight_decay(var_list=[np.zeros(2)])


def test_change_between_steps_without_retrace():
    x = tf.Variable(X0.astype("float64"))
    opt = tfopt.GradientDescent(0.1, weight_decay=0.0)
    traces = []

    @tf.function
    def step():
        traces.append(1)
        opt.apply_gradients([(tf.zeros_like(x), x)])

    step()
    np.testing.assert_array_equal(x.numpy(), X0.astype("float64"))  # 0 decays by nothing
    opt.weight_decay = 0.5
    step()
    want = X0.astype("float64") * (1 - 0.5 * 0.1)
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-15)
    assert len(traces) == 1
    assert opt.weight_decay.dtype == tf.float64 and float(opt.weight_decay.numpy()) == 0.5


def test_switching_on_or_off_only_before_the_first_step():
    x = tf.Variable(X0)
    opt = tfopt.GradientDescent(0.1)
    assert opt.weight_decay is None
    opt.weight_decay = 0.1  # before the first step: allowed
    opt.weight_decay = None
    _zero_step(opt, [x])
    np.testing.assert_array_equal(x.numpy(), X0)
    with pytest.raises(ValueError, match="weight_decay cannot be switched on"):
        opt.weight_decay = 0.1
    on = tfopt.GradientDescent(0.1, weight_decay=0.1)
    _zero_step(on, [x])
    with pytest.raises(ValueError, match=r"weight_decay cannot be switched off"):
        on.weight_decay = None
    assert float(on.weight_decay.numpy()) == 0.1


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.1", True, [0.1], lambda step: 0.1])
def test_invalid_value_raises_naming_weight_decay(value):
    with pytest.raises(ValueError, match="weight_decay"):
        tfopt.Adam(0.01, weight_decay=value)
    opt = tfopt.Adam(0.01, weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.weight_decay = value
    assert float(opt.weight_decay.numpy()) == 0.1


def test_config_round_trip():
    opt = tfopt.Adam(0.01, beta_1=0.8, weight_decay=0.25)
    config = opt.get_config()
    assert config["weight_decay"] == 0.25
    clone = tfopt.Adam.from_config(config)
    assert clone.get_config() == config
    assert "weight_decay" not in tfopt.Adam(0.01).get_config()  # None: configs stay as they were
    assert tfopt.Adam.from_config(tfopt.Adam(0.01).get_config()).weight_decay is None
    x, y = tf.Variable(X0), tf.Variable(X0)
    for g in GRADS[:3]:
        opt.apply_gradients([(tf.constant(g), x)])
        clone.apply_gradients([(tf.constant(g), y)])
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_signature_lists_weight_decay():
    import inspect

    parameter = inspect.signature(tfopt.Adam).parameters["weight_decay"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None


@pytest.mark.parametrize("fused", [None, False, True])
@pytest.mark.parametrize("make", [lambda **k: tfopt.GradientDescent(0.1, **k),
                                  lambda **k: tfopt.Momentum(0.05, momentum=0.9, **k),
                                  lambda **k: tfopt.Adam(0.01, **k)], ids=["sgd", "momentum", "adam"])
def test_none_changes_no_bits(make, fused):
    variables = {name: [tf.Variable(X0.astype(dtype)), tf.Variable(X0[0].astype(dtype))]
                 for name in ("with", "without") for dtype in ["float32"]}
    both = {"with": make(weight_decay=None, fused=fused), "without": make(fused=fused)}
    for g in GRADS[:5]:
        for name, opt in both.items():
            opt.apply_gradients([(tf.constant(g), variables[name][0]), (tf.constant(g[0]), variables[name][1])])
    for a, b in zip(variables["with"], variables["without"]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("fused", [None, False])
def test_tf_function_equals_eager(fused):
    results = []
    for compiled in (False, True):
        x, h = tf.Variable(X0), tf.Variable(X0.astype("float16"))
        opt = tfopt.Adam(0.01, weight_decay=0.1, fused=fused)
        opt.exclude_from_weight_decay(var_names=["never"])

        def step(g, opt=opt, x=x, h=h):
            opt.apply_gradients([(g, x), (tf.cast(g, tf.float16), h)])

        step = tf.function(step) if compiled else step
        for g in GRADS[:5]:
            step(tf.constant(g))
        results.append((x.numpy(), h.numpy()))
    for eager, traced in zip(*results):
        np.testing.assert_array_equal(eager, traced)


def test_half_precision_decays_in_float32_rounding_once():
    h = tf.Variable(X0.astype("float16"))
    opt = tfopt.GradientDescent(0.1, weight_decay=0.3)
    _zero_step(opt, [h])
    value = X0.astype("float16").astype("float32")
    want = (value - value * np.float32(0.3) * np.float32(0.1)).astype("float16")
    np.testing.assert_array_equal(h.numpy(), want)


def test_sparse_gradient_decays_the_whole_variable():
    x = tf.Variable(X0)
    opt = tfopt.GradientDescent(0.1, weight_decay=0.5)
    grad = tf.IndexedSlices(tf.ones((1, 4)), tf.constant([0]), tf.constant([3, 4]))
    opt.apply_gradients([(grad, x)])
    decayed = X0 - X0 * np.float32(0.5) * np.float32(0.1)
    np.testing.assert_array_equal(x.numpy()[1:], decayed[1:])
    np.testing.assert_array_equal(x.numpy()[0], decayed[0] - np.float32(0.1))


def test_chain_uses_its_learning_rate():
    """A chain decays with its scale_by_learning_rate's rate; weight_decay= is in its config."""
    chain = tfopt.chain(tfopt.transforms.scale_by_learning_rate(0.1), weight_decay=0.05)
    assert tfopt.Chain.from_config(chain.get_config()).get_config() == chain.get_config()
    assert chain.get_config()["weight_decay"] == 0.05
    sgd = tfopt.GradientDescent(0.1, weight_decay=0.05, fused=False)
    x, y = tf.Variable(X0), tf.Variable(X0)
    for g in GRADS[:5]:
        chain.apply_gradients([(tf.constant(g), x)])
        sgd.apply_gradients([(tf.constant(g), y)])
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_mirrored_equals_one_device(mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        x = tf.Variable(X0)
        opt = tfopt.Adam(0.01, weight_decay=0.1)
    y, single = tf.Variable(X0), tfopt.Adam(0.01, weight_decay=0.1)

    @tf.function
    def step(g):
        def replica(g):  # each replica gets half the gradient: the all-reduce sums them
            opt.apply_gradients([(g / 2, x)])
        strategy.run(replica, args=(g,))

    for g in GRADS[:3]:
        step(tf.constant(g))
        single.apply_gradients([(tf.constant(g), y)])
    np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6)


def test_as_keras_carries_weight_decay_and_exclusions():
    opt = tfopt.GradientDescent(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    keras_opt = opt.as_keras()
    assert keras_opt.weight_decay == 0.5
    assert "weight_decay" not in keras_opt.rule_config
    model = _model()
    dense = model.layers[0]
    kernel, bias = keras.ops.convert_to_numpy(dense.kernel), keras.ops.convert_to_numpy(dense.bias)
    keras_opt.apply_gradients([(tf.zeros_like(v.value), v) for v in model.trainable_variables])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.bias), bias)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.kernel),
                                  kernel - kernel * np.float32(0.5) * np.float32(0.1))
    restored = type(keras_opt).from_config(keras_opt.get_config())
    assert restored.weight_decay == 0.5
    assert "weight_decay" not in tfopt.Adam(0.01).as_keras().rule_config
    assert tfopt.Adam(0.01).as_keras().weight_decay is None


def test_as_keras_exclusion_by_variable():
    model = _model()
    dense = model.layers[0]
    opt = tfopt.GradientDescent(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_list=[dense.kernel])
    keras_opt = opt.as_keras()
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    keras_opt.apply_gradients([(tf.zeros_like(v.value), v) for v in model.trainable_variables])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.kernel), kernel)


def test_conformance_kit_with_weight_decay():
    report = tfopt.testing.check_optimizer(lambda: tfopt.Adam(0.01, weight_decay=0.1), skip=("mirrored", "xla"))
    assert report
