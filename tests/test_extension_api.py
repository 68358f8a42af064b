"""The public extension API: a rule is declarations plus a pure ``update``; the base does the rest."""

import inspect
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
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


class SeesEverything(tfopt.Optimizer):
    """Records the inputs the base hands to ``update``; steps by ``lr * g``."""

    decay = tfopt.Hyperparameter(0.5)
    centered = tfopt.Option(False, check=tfopt.checks.boolean)

    def step_values(self, *, step, decay, **_):
        return {"decay_power": decay**step}

    def update(self, grad, slots, **inputs):
        self.seen = inputs
        return inputs["learning_rate"] * grad, {}


def rmsprop_reference(x, grads, lr, rho, eps):
    """NumPy float64, the formula of the docstring."""
    x, v = np.array(x, np.float64), np.zeros_like(x, np.float64)
    for g in grads:
        v = rho * v + (1 - rho) * g**2
        x = x - lr * g / (np.sqrt(v) + eps)
    return x


def test_keywords_come_from_the_declarations():
    opt = RMSprop(learning_rate=1e-2, rho=0.8)
    assert float(opt.learning_rate) == 1e-2 and float(opt.rho) == 0.8 and float(opt.epsilon) == 1e-7
    opt = RMSprop(1e-2, clipnorm=1.0)
    assert float(opt.learning_rate) == 1e-2 and opt.clipnorm == 1.0 and float(opt.rho) == 0.9
    assert float(RMSprop().learning_rate) == 1e-3


def test_the_signature_shows_them():
    parameters = inspect.signature(RMSprop).parameters
    assert list(parameters)[:3] == ["learning_rate", "rho", "epsilon"]
    assert parameters["rho"].default == 0.9 and parameters["clipnorm"].kind == inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(tfopt.Adam).parameters)[:4] == ["learning_rate", "beta_1", "beta_2", "epsilon"]


@pytest.mark.parametrize("call, message", [
    (lambda: RMSprop(rhoo=0.8), "unexpected keyword argument 'rhoo'"),
    (lambda: RMSprop(0.1, 0.9, 1e-7, 5), "at most 3 positional arguments"),
    (lambda: RMSprop(0.1, learning_rate=0.2), "multiple values for argument 'learning_rate'"),
])
def test_bad_arguments_are_type_errors_as_in_python(call, message):
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize("kwargs, message", [({"rho": 1.0}, "rho"), ({"epsilon": -1.0}, "epsilon"),
                                             ({"learning_rate": float("nan")}, "learning_rate")])
def test_checks_reject_bad_values_by_name(kwargs, message):
    with pytest.raises(ValueError, match=f"Invalid {message}"):
        RMSprop(**kwargs)


def test_a_required_hyperparameter_must_be_given():
    class Needs(tfopt.Optimizer):
        decay = tfopt.Hyperparameter(check=tfopt.checks.positive)

        def update(self, grad, slots, *, learning_rate, decay, **_):
            return learning_rate * decay * grad, {}

    with pytest.raises(TypeError, match="missing required argument 'decay'"):
        Needs(0.1)
    assert float(Needs(0.1, decay=2.0).decay) == 2.0
    assert inspect.signature(Needs).parameters["decay"].kind == inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_the_rule_matches_a_numpy_reference(compiled):
    opt, x = RMSprop(0.05, rho=0.8), tf.Variable([1.0, -2.0, 3.0], dtype=tf.float64)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=3) for _ in range(20)]
    apply = tf.function(opt.apply_gradients) if compiled else opt.apply_gradients
    for g in grads:
        apply([(tf.constant(g), x)])
    np.testing.assert_allclose(x.numpy(), rmsprop_reference([1.0, -2.0, 3.0], grads, 0.05, 0.8, 1e-7), rtol=1e-12)


def test_update_gets_step_param_hyperparameters_and_step_values_in_the_compute_dtype():
    opt = SeesEverything(0.1, decay=0.5)
    x = tf.Variable([1.0, 2.0], dtype=tf.float16)
    for _ in range(3):
        opt.apply_gradients([(tf.constant([1.0, 1.0], tf.float16), x)])
    seen = opt.seen
    assert set(seen) == {"learning_rate", "decay", "step", "param", "decay_power"}
    assert all(t.dtype == tf.float32 for t in seen.values())
    assert float(seen["step"]) == 3.0 and float(seen["decay_power"]) == 0.125
    np.testing.assert_allclose(seen["param"].numpy(), [0.8, 1.8], rtol=1e-3)  # before the third step


def test_options_are_fixed_plain_values_in_the_config():
    opt = SeesEverything(centered=True)
    assert opt.centered is True and opt.get_config()["centered"] is True
    with pytest.raises(AttributeError, match="fixed at construction"):
        opt.centered = False
    with pytest.raises(ValueError, match="Invalid centered"):
        SeesEverything(centered="yes")
    assert tfopt.Momentum(nesterov=True).get_config()["nesterov"] is True


def test_config_round_trip():
    opt = RMSprop(0.02, rho=0.7, clipvalue=1.0)
    again = RMSprop.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()


def test_a_hyperparameter_change_reaches_a_traced_step_without_retracing():
    opt, x = RMSprop(0.1), tf.Variable([1.0])
    step = tf.function(lambda: opt.apply_gradients([(tf.constant([1.0]), x)]))
    step()  # (slots created inside the first call: TensorFlow traces it twice)
    traces = step.experimental_get_tracing_count()
    opt.rho = 0.0  # v = g^2 from now on: the step is lr * g / (|g| + eps)
    before = x.numpy()
    step()
    np.testing.assert_allclose(before - x.numpy(), [0.1], rtol=1e-5)
    assert step.experimental_get_tracing_count() == traces


def test_update_must_return_every_slot():
    class Forgets(tfopt.Optimizer):
        slot_names = ("m",)

        def update(self, grad, slots, *, learning_rate, **_):
            return learning_rate * grad, {}

    x = tf.Variable([1.0])
    with pytest.raises(ValueError, match=r"returned slots \[\]; it must return exactly its slot_names \['m'\]"):
        Forgets(0.1).apply_gradients([(tf.constant([1.0]), x)])


def test_a_rule_without_update_says_so():
    class Empty(tfopt.Optimizer):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define update"):
        Empty().apply_gradients([(tf.constant([1.0]), tf.Variable([1.0]))])


@pytest.mark.parametrize("base", [tfopt.GradientDescent, tfopt.Momentum, tfopt.Adam])
def test_a_subclass_of_a_builtin_that_changes_update_runs_its_own_update(base):
    """Its base's native and fused kernels reproduce the base's math, not the subclass's: they are not used."""

    class Frozen(base):
        def update(self, grad, slots, **inputs):
            delta, new_slots = super().update(grad, slots, **inputs)
            return 0 * delta, new_slots

    x, opt = tf.Variable([1.0, 2.0]), Frozen(0.1)
    opt.apply_gradients([(tf.constant([1.0, 1.0]), x)])
    tf.function(opt.apply_gradients)([(tf.constant([1.0, 1.0]), x)])
    assert x.numpy().tolist() == [1.0, 2.0]

    class Renamed(base):  # changes nothing of the math: keeps the fast paths
        pass

    assert Renamed._apply_multi is base._apply_multi
