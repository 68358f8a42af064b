r"""Classic test losses for optimizers.

Each problem is a :class:`Problem`: a name, the input dimension, a TensorFlow
``loss`` (``x`` of shape ``[..., dim]`` -> shape ``[...]``), every known global
minimiser, the minimum value, a plotting box and a customary hard start.

Every ``loss``

* keeps the input dtype (``tf.float32`` in, ``tf.float32`` out; ``tf.float64`` in,
  ``tf.float64`` out; integer input is cast to ``tf.float32``);
* is differentiable with ``tf.GradientTape`` and runs inside ``tf.function``,
  also with ``jit_compile=True``;
* is vectorised over the leading axes, so a grid of 10,000 points is one call.

The polynomial problems (``quartic``, ``himmelblau``, ``rosenbrock``, ``beale``,
``booth``, ``goldstein_price``, ``six_hump_camel``) use only elementwise ``+``,
``-``, ``*`` and ``/`` (powers are written as products), so evaluating a batch of
rows gives bit-identical values to evaluating each row on its own. ``rastrigin``
and ``ackley`` need ``cos``/``exp``/``sqrt``, whose vectorised kernels may differ
from the scalar ones in the last bit.

Example::

    >>> from tfopt import problems
    >>> p = problems.get("himmelblau")
    >>> p.loss(tf.constant([[3.0, 2.0], [-4.0, 0.0]]))   # shape [2]
    >>> problems.names()
    ['quartic', 'himmelblau', 'rosenbrock', ...]

Minimisers quoted with many digits were computed with ``scipy.optimize`` from the
usual rounded values and then polished by Newton's method in 60-digit decimal
arithmetic; the literals below are the correctly rounded float64 values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf

__all__ = [
    "Problem",
    "ALL",
    "get",
    "names",
    "quartic",
    "himmelblau",
    "rosenbrock",
    "beale",
    "booth",
    "rastrigin",
    "ackley",
    "goldstein_price",
    "six_hump_camel",
]

Interval = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A scalar test loss with its known solution.

    Attributes:
      name: Registry name, e.g. ``"himmelblau"``.
      dim: Number of coordinates; ``loss`` takes ``x`` of shape ``[..., dim]``.
      loss: ``x -> f(x)``, a TensorFlow function mapping shape ``[..., dim]`` to
        ``[...]`` in the dtype of ``x``.
      minima: Every known global minimiser, each a tuple of ``dim`` floats.
      f_min: The global minimum value.
      domain: Plotting box, one ``(lo, hi)`` pair per coordinate; contains the
        minima and ``default_init``.
      default_init: A customary hard starting point (``dim`` floats).
      description: The formula, in one line.
    """

    name: str
    dim: int
    loss: Callable[[tf.Tensor], tf.Tensor] = dataclasses.field(repr=False)
    minima: tuple[tuple[float, ...], ...]
    f_min: float
    domain: tuple[Interval, ...]
    default_init: tuple[float, ...]
    description: str = ""

    def __call__(self, x) -> tf.Tensor:
        """Same as ``self.loss(x)``."""
        return self.loss(x)


def _as_float_tensor(x) -> tf.Tensor:
    """Converts ``x`` to a tensor, keeping float dtypes and casting ints to float32."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return x


# ---------------------------------------------------------------------------
# Losses. Inputs have shape [..., dim]; x[..., 0] is x, x[..., 1] is y.
# ---------------------------------------------------------------------------


def _quartic(x):
    r"""f(x) = 2 x^4 + 3 x^3 + 2.

    f'(x) = 8 x^3 + 9 x^2 = x^2 (8 x + 9): a global minimum at x = -9/8 with
    f = 2 - 2187/4096 = 0.93212890625, and a stationary inflection point at x = 0
    (f = 2), where plain gradient descent stalls. This is the loss of the
    TensorFlow guide "Optimizers with Core APIs".
    """
    x = _as_float_tensor(x)[..., 0]
    x3 = x * x * x
    return 2.0 * (x3 * x) + 3.0 * x3 + 2.0


def _himmelblau(x):
    r"""f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2.

    Four global minima with f = 0 (both brackets vanish): (3, 2),
    (-2.805118..., 3.131312...), (-3.779310..., -3.283186...),
    (3.584428..., -1.848126...); a local maximum at (-0.270845, -0.923039).
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    a = x * x + y - 11.0
    b = x + y * y - 7.0
    return a * a + b * b


def _rosenbrock(x):
    r"""f(x, y) = (a - x)^2 + b (y - x^2)^2 with a = 1, b = 100.

    Global minimum f = 0 at (1, 1), at the end of a long, curved, flat valley
    y = x^2.
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    a = 1.0 - x
    b = y - x * x
    return a * a + 100.0 * (b * b)


def _beale(x):
    r"""f(x, y) = (1.5 - x + x y)^2 + (2.25 - x + x y^2)^2 + (2.625 - x + x y^3)^2.

    Global minimum f = 0 at (3, 0.5); flat valleys and very steep walls in the
    corners of [-4.5, 4.5]^2.
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    xy = x * y
    xy2 = xy * y
    xy3 = xy2 * y
    a = 1.5 - x + xy
    b = 2.25 - x + xy2
    c = 2.625 - x + xy3
    return a * a + b * b + c * c


def _booth(x):
    r"""f(x, y) = (x + 2 y - 7)^2 + (2 x + y - 5)^2.

    A convex quadratic (Hessian [[10, 8], [8, 10]], condition number 9); global
    minimum f = 0 at (1, 3).
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    a = x + 2.0 * y - 7.0
    b = 2.0 * x + y - 5.0
    return a * a + b * b


def _rastrigin(x):
    r"""f(x) = 10 n + \sum_i (x_i^2 - 10 cos(2 pi x_i)), here n = 2.

    Global minimum f = 0 at the origin, surrounded by a lattice of local minima
    near the integer points.
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    two_pi = 2.0 * math.pi
    return 20.0 + (x * x - 10.0 * tf.cos(two_pi * x)) + (y * y - 10.0 * tf.cos(two_pi * y))


def _ackley(x):
    r"""f(x, y) = -20 exp(-0.2 sqrt((x^2 + y^2) / 2))
                  - exp((cos 2 pi x + cos 2 pi y) / 2) + e + 20.

    Global minimum f = 0 at the origin, a cone-shaped dip in a nearly flat,
    bumpy plateau. Evaluated as ``-20 expm1(-0.2 r) - e expm1(c - 1)`` (the same
    function), so that f(0, 0) is exactly 0 and there is no cancellation near
    the minimum. The cone's tip is not differentiable; the gradient there is
    taken as 0 (a subgradient), not NaN.
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    r2 = 0.5 * (x * x + y * y)
    positive = r2 > 0.0
    # Double-where so that the gradient of sqrt at 0 is 0, not 0 * inf = NaN.
    r = tf.where(positive, tf.sqrt(tf.where(positive, r2, tf.ones_like(r2))), tf.zeros_like(r2))
    two_pi = 2.0 * math.pi
    c = 0.5 * (tf.cos(two_pi * x) + tf.cos(two_pi * y))
    return -20.0 * tf.math.expm1(-0.2 * r) - math.e * tf.math.expm1(c - 1.0)


def _goldstein_price(x):
    r"""f(x, y) = [1 + (x + y + 1)^2 (19 - 14x + 3x^2 - 14y + 6xy + 3y^2)]
                * [30 + (2x - 3y)^2 (18 - 32x + 12x^2 + 48y - 36xy + 27y^2)].

    Global minimum f = 3 at (0, -1); local minima at about (-0.6, -0.4) (f = 30),
    (1.8, 0.2) (f = 84) and (1.2, 0.8) (f = 840). Values span six orders of
    magnitude on [-2, 2]^2.
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    xx, xy, yy = x * x, x * y, y * y
    s = x + y + 1.0
    t = 2.0 * x - 3.0 * y
    p = 19.0 - 14.0 * x + 3.0 * xx - 14.0 * y + 6.0 * xy + 3.0 * yy
    q = 18.0 - 32.0 * x + 12.0 * xx + 48.0 * y - 36.0 * xy + 27.0 * yy
    return (1.0 + s * s * p) * (30.0 + t * t * q)


def _six_hump_camel(x):
    r"""f(x, y) = (4 - 2.1 x^2 + x^4 / 3) x^2 + x y + (-4 + 4 y^2) y^2.

    Two global minima f = -1.0316284534898774 at (0.0898420131, -0.7126564030)
    and (-0.0898420131, 0.7126564030); four more local minima, two of them at
    about (+-1.7036, -+0.7961) (f = -0.2155).
    """
    x = _as_float_tensor(x)
    x, y = x[..., 0], x[..., 1]
    xx = x * x
    yy = y * y
    return (4.0 - 2.1 * xx + xx * xx / 3.0) * xx + x * y + (-4.0 + 4.0 * yy) * yy


# ---------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------

quartic = Problem(
    name="quartic",
    dim=1,
    loss=_quartic,
    minima=((-1.125,),),
    f_min=0.93212890625,  # 2 - 2187/4096, exact in binary
    domain=((-2.0, 2.5),),
    default_init=(2.0,),  # the TensorFlow guide's start: steep, then the x = 0 plateau
    description="f(x) = 2x^4 + 3x^3 + 2",
)

himmelblau = Problem(
    name="himmelblau",
    dim=2,
    loss=_himmelblau,
    minima=(
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.2831859912861696),
        (3.5844283403304917, -1.8481265269644036),
    ),
    f_min=0.0,
    domain=((-5.0, 5.0), (-5.0, 5.0)),
    default_init=(-4.0, 0.0),
    description="f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2",
)

rosenbrock = Problem(
    name="rosenbrock",
    dim=2,
    loss=_rosenbrock,
    minima=((1.0, 1.0),),
    f_min=0.0,
    domain=((-2.0, 2.0), (-1.0, 3.0)),
    default_init=(-1.2, 1.0),  # Rosenbrock (1960), More-Garbow-Hillstrom (1981)
    description="f(x, y) = (1 - x)^2 + 100 (y - x^2)^2",
)

beale = Problem(
    name="beale",
    dim=2,
    loss=_beale,
    minima=((3.0, 0.5),),
    f_min=0.0,
    domain=((-4.5, 4.5), (-4.5, 4.5)),
    # Lr 0.1 explodes for plain and momentum gradient descent, small learning
    # rates crawl along the flat valley. (L. Tiao's animations start at (3, 4),
    # which is harder still: f = 39063 there and plain descent explodes at lr 1e-3.)
    default_init=(1.0, 1.5),
    description="f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2",
)

booth = Problem(
    name="booth",
    dim=2,
    loss=_booth,
    minima=((1.0, 3.0),),
    f_min=0.0,
    domain=((-10.0, 10.0), (-10.0, 10.0)),
    default_init=(-8.0, 8.0),
    description="f(x, y) = (x + 2y - 7)^2 + (2x + y - 5)^2",
)

rastrigin = Problem(
    name="rastrigin",
    dim=2,
    loss=_rastrigin,
    minima=((0.0, 0.0),),
    f_min=0.0,
    domain=((-4.5, 4.5), (-4.5, 4.5)),
    default_init=(-2.0, 3.5),  # pytorch-optimizer's optimizer visualisations
    description="f(x, y) = 20 + x^2 - 10 cos(2 pi x) + y^2 - 10 cos(2 pi y)",
)

ackley = Problem(
    name="ackley",
    dim=2,
    loss=_ackley,
    minima=((0.0, 0.0),),
    f_min=0.0,
    domain=((-5.0, 5.0), (-5.0, 5.0)),
    default_init=(3.0, -4.0),  # near a local minimum, off the symmetry axes
    description=("f(x, y) = -20 exp(-0.2 sqrt((x^2 + y^2) / 2)) - exp((cos 2 pi x + cos 2 pi y) / 2) + e + 20"),
)

goldstein_price = Problem(
    name="goldstein_price",
    dim=2,
    loss=_goldstein_price,
    minima=((0.0, -1.0),),
    f_min=3.0,
    domain=((-2.0, 2.0), (-2.0, 2.0)),
    default_init=(-1.0, 1.0),
    description=(
        "f(x, y) = [1 + (x + y + 1)^2 (19 - 14x + 3x^2 - 14y + 6xy + 3y^2)]"
        " [30 + (2x - 3y)^2 (18 - 32x + 12x^2 + 48y - 36xy + 27y^2)]"
    ),
)

six_hump_camel = Problem(
    name="six_hump_camel",
    dim=2,
    loss=_six_hump_camel,
    minima=(
        (0.08984201310031806, -0.7126564030207396),
        (-0.08984201310031806, 0.7126564030207396),
    ),
    f_min=-1.0316284534898774,
    domain=((-2.0, 2.0), (-1.0, 1.0)),
    # Inside the basin of the local minimum (-1.7036, 0.7961), f = -0.2155.
    default_init=(-1.5, 0.0),
    description="f(x, y) = (4 - 2.1x^2 + x^4/3) x^2 + xy + (-4 + 4y^2) y^2",
)

ALL: dict[str, Problem] = {
    p.name: p
    for p in (
        quartic,
        himmelblau,
        rosenbrock,
        beale,
        booth,
        rastrigin,
        ackley,
        goldstein_price,
        six_hump_camel,
    )
}


def names() -> list[str]:
    """Returns the names of all problems, in registry order."""
    return list(ALL)


def get(name: str | Problem) -> Problem:
    """Looks a problem up by name.

    Args:
      name: A problem name (case-insensitive; ``-`` and spaces may stand for
        ``_``, so ``"Six-Hump-Camel"`` works), or a :class:`Problem`, which is
        returned as it is.

    Returns:
      The :class:`Problem`.

    Raises:
      ValueError: If no problem has that name; the message lists the valid names.
      TypeError: If ``name`` is neither a string nor a :class:`Problem`.
    """
    if isinstance(name, Problem):
        return name
    if not isinstance(name, str):
        raise TypeError(f"problem must be a name (str) or a Problem, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    try:
        return ALL[key]
    except KeyError:
        raise ValueError(f"Unknown problem {name!r}. Valid names: {', '.join(ALL)}") from None
