"""The wrappers (tfopt.ApplyIfFinite, MultiSteps, Lookahead, MovingAverage): semantics against NumPy or the inner
optimizer, eager == tf.function, checkpoints, configs, and tfopt's conformance kit."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import tfopt
import tfopt.testing
from tfopt.optimizers.apply_if_finite import ApplyIfFinite
from tfopt.optimizers.lookahead import Lookahead
from tfopt.optimizers.moving_average import MovingAverage
from tfopt.optimizers.multi_steps import MultiSteps

WRAPPERS = {
    "apply_if_finite": lambda: ApplyIfFinite(tfopt.Adam(0.05)),
    "multi_steps": lambda: MultiSteps(tfopt.Adam(0.05), every_k=3),
    "lookahead": lambda: Lookahead(tfopt.Adam(0.05), sync_period=3, slow_step_size=0.4),
    "moving_average": lambda: MovingAverage(tfopt.Momentum(0.05, momentum=0.7), average_decay=0.8),
}
OWN_SLOTS = {"apply_if_finite": (), "multi_steps": ("accumulator",), "lookahead": ("slow",),
             "moving_average": ("average",)}
each_wrapper = pytest.mark.parametrize("name", list(WRAPPERS))

SHAPES = [(3,), (2, 2)]


def initial(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in SHAPES]


def gradients(steps, seed=1):
    rng = np.random.default_rng(seed)
    return [[tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES] for _ in range(steps)]


def state(opt, variables):
    """Variables, every slot (the wrapper's and the inner optimizer's), both step counts."""
    found = {"iterations": int(opt.iterations.numpy()),
             "inner iterations": int(opt.inner_optimizer.iterations.numpy())}
    for i, v in enumerate(variables):
        found[f"variable {i}"] = v.numpy()
        for name in opt.slot_names:
            found[f"{name} {i}"] = opt.get_slot(v, name).numpy()
    if hasattr(opt, "skipped_steps"):
        found["skipped_steps"] = int(opt.skipped_steps.numpy())
    return found


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def stepper(opt, variables, compiled):
    def step(grads):
        opt.apply_gradients(zip(grads, variables))

    return tf.function(step) if compiled else step


# ------------------------------------------------------------------ the contract, per wrapper
@each_wrapper
def test_conformance_kit(name):
    """tfopt's own contract (slots, per variable, tf.function, XLA, step counter, checkpoints, sparse, None
    gradients, half precision, as_keras() in fit, bad input, config); tf.distribute is not supported yet."""
    factory = (lambda: MultiSteps(tfopt.Adam(0.05), every_k=2)) if name == "multi_steps" else WRAPPERS[name]
    # (every_k=2: the kit's bad-schedule check makes one call, which must be an applying one)
    report = tfopt.testing.check_optimizer(factory, skip=("mirrored",))
    assert "keras" in report.checked


@each_wrapper
def test_eager_equals_tf_function(name):
    grads = gradients(7)
    results = []
    for compiled in (False, True):
        opt, variables = WRAPPERS[name](), [tf.Variable(x) for x in initial()]
        step = stepper(opt, variables, compiled)
        for g in grads:
            step(g)
        results.append(state(opt, variables))
    assert_same(results[1], results[0])
    assert results[0]["iterations"] == 7


@each_wrapper
def test_checkpoint_resumes_identically(name, tmp_path):
    grads = gradients(8)
    opt, variables = WRAPPERS[name](), [tf.Variable(x) for x in initial()]
    step = stepper(opt, variables, compiled=True)
    for g in grads[:4]:  # (MultiSteps: mid-accumulation; Lookahead: between syncs)
        step(g)
    path = tf.train.Checkpoint(optimizer=opt, variables=variables).write(str(tmp_path / "ckpt"))
    for g in grads[4:]:
        step(g)
    for build in (True, False):
        fresh, fresh_vars = WRAPPERS[name](), [tf.Variable(x) for x in initial(seed=9)]
        if build:
            fresh.build(fresh_vars)
        status = tf.train.Checkpoint(optimizer=fresh, variables=fresh_vars).read(path)
        fresh_step = stepper(fresh, fresh_vars, compiled=True)
        for g in grads[4:]:
            fresh_step(g)
        status.assert_existing_objects_matched()
        assert_same(state(fresh, fresh_vars), state(opt, variables))


@each_wrapper
def test_config_round_trip(name):
    opt = WRAPPERS[name]()
    config = opt.get_config()
    inner = type(opt.inner_optimizer)
    assert config["optimizer"]["class"] == f"{inner.__module__}:{inner.__name__}"
    assert config["optimizer"]["config"] == opt.inner_optimizer.get_config()
    clone = type(opt).from_config(config)
    assert type(clone) is type(opt) and clone.get_config() == config
    assert clone.inner_optimizer is not opt.inner_optimizer
    grads = gradients(4)
    runs = []
    for o in (opt, clone):
        variables = [tf.Variable(x) for x in initial()]
        for g in grads:
            o.apply_gradients(g, variables)  # the two-sequence form
        runs.append(state(o, variables))
    assert_same(runs[1], runs[0])


@each_wrapper
def test_slots_build_and_learning_rate(name):
    opt, variables = WRAPPERS[name](), [tf.Variable(x) for x in initial()]
    inner = opt.inner_optimizer
    assert opt.slot_names == (*OWN_SLOTS[name], *inner.slot_names)
    opt.build(variables)
    for v in variables:
        for slot in inner.slot_names:
            assert opt.get_slot(v, slot) is inner.get_slot(v, slot)
        for slot in OWN_SLOTS[name]:
            assert opt.get_slot(v, slot).shape == v.shape
    with pytest.raises(KeyError, match="no slot 'nope'"):
        opt.get_slot(variables[0], "nope")
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.05)
    opt.learning_rate = 0.01
    assert float(inner.learning_rate.numpy()) == pytest.approx(0.01)


@each_wrapper
def test_distribute_is_not_implemented(name):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        opt, v = WRAPPERS[name](), tf.Variable([1.0, 2.0])
    before = v.numpy()
    with pytest.raises(NotImplementedError, match=type(opt).__name__):
        strategy.run(lambda: opt.apply_gradients([(tf.constant([1.0, 1.0]), v)]))
    np.testing.assert_array_equal(v.numpy(), before)


def test_bad_arguments():
    with pytest.raises(TypeError, match="call it"):
        Lookahead(tfopt.Adam)
    with pytest.raises(TypeError, match="learning_rate"):
        MovingAverage(tfopt.Adam(), learning_rate=0.1)
    with pytest.raises(ValueError, match="every_k"):
        MultiSteps(tfopt.Adam(), every_k=0)
    with pytest.raises(ValueError, match="sync_period"):
        Lookahead(tfopt.Adam(), sync_period=1.5)
    with pytest.raises(ValueError, match="slow_step_size"):
        Lookahead(tfopt.Adam(), slow_step_size=1.5)
    with pytest.raises(ValueError, match="average_decay"):
        MovingAverage(tfopt.Adam(), average_decay=-0.1)
    assert Lookahead(tfopt.Adam(), 4, 0.25).get_config()["sync_period"] == 4  # TFA's positional order


# ------------------------------------------------------------------ ApplyIfFinite
@pytest.mark.parametrize("compiled", [False, True])
def test_apply_if_finite_skips_nan_and_inf(compiled):
    grads = gradients(8)
    bad = {2: np.nan, 3: np.inf, 6: -np.inf}
    opt, variables = ApplyIfFinite(tfopt.Adam(0.05)), [tf.Variable(x) for x in initial()]
    ref, ref_vars = tfopt.Adam(0.05), [tf.Variable(x) for x in initial()]
    step = stepper(opt, variables, compiled)
    ref_step = stepper(ref, ref_vars, compiled)
    for i, g in enumerate(grads):
        if i in bad:
            g = [g[0], tf.tensor_scatter_nd_update(g[1], [[1, 0]], [bad[i]])]
            before = state(opt, variables)
            step(g)
            after = state(opt, variables)
            assert after.pop("skipped_steps") == before.pop("skipped_steps") + 1
            assert_same(after, before)  # nothing else changed: variables, inner slots, both counts
        else:
            step(g)
            ref_step(g)
            got = state(opt, variables)
            for key, value in got.items():
                if key != "skipped_steps" and key != "inner iterations":
                    want = ref.iterations.numpy() if key == "iterations" else (
                        ref_vars[int(key[-1])].numpy() if key.startswith("variable")
                        else ref.get_slot(ref_vars[int(key[-1])], key.split()[0]).numpy())
                    np.testing.assert_array_equal(value, want, err_msg=key)  # finite steps: the inner's, bitwise
    assert int(opt.skipped_steps.numpy()) == 3
    assert int(opt.iterations.numpy()) == 5 == int(opt.inner_optimizer.iterations.numpy())


def test_apply_if_finite_sparse_nan():
    v = tf.Variable(np.ones((4, 2), "float32"))
    opt = ApplyIfFinite(tfopt.GradientDescent(0.1))
    opt.apply_gradients([(tf.IndexedSlices(tf.constant([[np.nan, 1.0]]), tf.constant([2]), tf.constant([4, 2])), v)])
    np.testing.assert_array_equal(v.numpy(), np.ones((4, 2)))
    opt.apply_gradients([(tf.IndexedSlices(tf.constant([[1.0, 1.0]]), tf.constant([2]), tf.constant([4, 2])), v)])
    assert v.numpy()[2, 0] == np.float32(1 - np.float32(0.1))
    assert (int(opt.skipped_steps.numpy()), int(opt.iterations.numpy())) == (1, 1)


# ------------------------------------------------------------------ MultiSteps
@pytest.mark.parametrize("compiled", [False, True])
def test_multi_steps_equals_inner_with_the_mean(compiled):
    k, grads = 4, gradients(12)
    opt, variables = MultiSteps(tfopt.Adam(0.05), every_k=k), [tf.Variable(x) for x in initial()]
    ref, ref_vars = tfopt.Adam(0.05), [tf.Variable(x) for x in initial()]
    step = stepper(opt, variables, compiled)
    for call, g in enumerate(grads, 1):
        values = [v.numpy() for v in variables]
        step(g)
        if call % k:
            for v, x in zip(variables, values):  # accumulating only
                np.testing.assert_array_equal(v.numpy(), x)
            continue
        group = grads[call - k:call]
        means = []
        for i in range(len(SHAPES)):
            total = group[0][i]
            for g_j in group[1:]:
                total = total + g_j[i]
            means.append(total / k)
        ref.apply_gradients(zip(means, ref_vars))
        for i, (v, r) in enumerate(zip(variables, ref_vars)):
            np.testing.assert_array_equal(v.numpy(), r.numpy())
            for slot in ("m", "v"):
                np.testing.assert_array_equal(opt.get_slot(v, slot).numpy(), ref.get_slot(r, slot).numpy())
            np.testing.assert_array_equal(opt.get_slot(v, "accumulator").numpy(), np.zeros(SHAPES[i]))
        assert int(opt.gradient_steps.numpy()) == call // k == int(ref.iterations.numpy())
    assert int(opt.iterations.numpy()) == 12


def test_multi_steps_every_1_is_the_inner_optimizer():
    grads = gradients(3)
    opt, variables = MultiSteps(tfopt.Adam(0.05), every_k=1), [tf.Variable(x) for x in initial()]
    ref, ref_vars = tfopt.Adam(0.05), [tf.Variable(x) for x in initial()]
    for g in grads:
        opt.apply_gradients(zip(g, variables))
        ref.apply_gradients(zip(g, ref_vars))
    for v, r in zip(variables, ref_vars):
        np.testing.assert_array_equal(v.numpy(), r.numpy())


# ------------------------------------------------------------------ Lookahead
@pytest.mark.parametrize("compiled", [False, True])
def test_lookahead_numpy_reference(compiled):
    lr, period, alpha, steps = 0.1, 3, 0.4, 11
    grads = gradients(steps)
    opt = Lookahead(tfopt.GradientDescent(lr), sync_period=period, slow_step_size=alpha)
    variables = [tf.Variable(x) for x in initial()]
    step = stepper(opt, variables, compiled)
    fast = [x.astype(np.float64) for x in initial()]
    slow = [x.copy() for x in fast]
    for t, g in enumerate(grads, 1):
        step(g)
        fast = [x - lr * gi.numpy().astype(np.float64) for x, gi in zip(fast, g)]
        if t % period == 0:
            slow = [s + alpha * (f - s) for s, f in zip(slow, fast)]
            fast = [s.copy() for s in slow]
        for v, f, s in zip(variables, fast, slow):
            np.testing.assert_allclose(v.numpy(), f, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.get_slot(v, "slow").numpy(), s, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_lookahead_tfa_exact_ratio(sparse):
    """TFA's test: after k steps with sync_period=k, slow = start + (adam's fast - start) * alpha."""
    for k in (5, 10):
        for alpha in (0.3, 0.7):
            rng = np.random.default_rng(0x2019)
            start = [rng.random((2,)) for _ in range(2)]
            if sparse:
                grads = [tf.IndexedSlices(tf.constant([rng.standard_normal()], tf.float32), tf.constant([i]),
                                          tf.constant([2])) for i in range(2)]
            else:
                grads = [tf.constant(rng.standard_normal((2,)), tf.float32) for _ in range(2)]
            quick = [tf.Variable(x, dtype=tf.float32) for x in start]
            slow = [tf.Variable(x, dtype=tf.float32) for x in start]
            adam, lookahead = tfopt.Adam(), Lookahead(tfopt.Adam(), sync_period=k, slow_step_size=alpha)
            for _ in range(k):
                adam.apply_gradients(zip(grads, quick))
                lookahead.apply_gradients(zip(grads, slow))
            for x0, q, s in zip(start, quick, slow):
                expected = x0.astype(np.float32) + (q.numpy() - x0.astype(np.float32)) * alpha
                np.testing.assert_allclose(s.numpy(), expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ MovingAverage
@pytest.mark.parametrize("compiled", [False, True])
def test_moving_average_numpy_reference(compiled):
    lr, decay, steps = 0.1, 0.8, 6
    grads = gradients(steps)
    opt, variables = MovingAverage(tfopt.GradientDescent(lr), average_decay=decay), [tf.Variable(x) for x in initial()]
    step = stepper(opt, variables, compiled)
    x = [v.astype(np.float64) for v in initial()]
    average = [v.copy() for v in x]
    for g in grads:
        step(g)
        x = [xi - lr * gi.numpy().astype(np.float64) for xi, gi in zip(x, g)]
        average = [decay * a + (1 - decay) * xi for a, xi in zip(average, x)]
        for v, xi, a in zip(variables, x, average):
            np.testing.assert_allclose(v.numpy(), xi, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(opt.get_slot(v, "average").numpy(), a, rtol=1e-5, atol=1e-6)


def test_moving_average_swap_and_back_is_exact():
    opt, variables = MovingAverage(tfopt.Adam(0.05), average_decay=0.7), [tf.Variable(x) for x in initial()]
    for g in gradients(5):
        opt.apply_gradients(zip(g, variables))
    weights = [v.numpy() for v in variables]
    averages = [opt.get_slot(v, "average").numpy() for v in variables]
    assert not np.array_equal(weights[0], averages[0])
    opt.swap_average_weights(variables)
    for v, w, a in zip(variables, weights, averages):
        np.testing.assert_array_equal(v.numpy(), a)
        np.testing.assert_array_equal(opt.get_slot(v, "average").numpy(), w)
    opt.swap_average_weights(variables)
    with opt.averaged(variables):
        for v, a in zip(variables, averages):
            np.testing.assert_array_equal(v.numpy(), a)
    tf.function(lambda: opt.swap_average_weights(variables))()  # also traced; then back eagerly
    opt.swap_average_weights(variables)
    for v, w, a in zip(variables, weights, averages):
        np.testing.assert_array_equal(v.numpy(), w)
        np.testing.assert_array_equal(opt.get_slot(v, "average").numpy(), a)
    opt.assign_average_vars(variables)
    for v, a in zip(variables, averages):
        np.testing.assert_array_equal(v.numpy(), a)


def test_weight_decay_is_the_inner_optimizers():
    inner = tfopt.GradientDescent(0.1, weight_decay=0.0)
    wrapper = tfopt.Lookahead(inner)
    wrapper.weight_decay = 0.5
    assert float(inner.weight_decay) == 0.5 and wrapper.weight_decay is inner.weight_decay
    x = tf.Variable([1.0])
    wrapper.apply_gradients([(tf.constant([0.0]), x)])
    np.testing.assert_allclose(x.numpy(), [0.95], rtol=1e-6)  # x - x * 0.5 * 0.1
