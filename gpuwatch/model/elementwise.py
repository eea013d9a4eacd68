"""Element-wise operations over Python scalars or numpy arrays, so one formula serves both callers.

The live path (the exporter, the TUI) assesses one card at a time with Python scalars: it must not pay
numpy's import (~150 ms, ~15 MiB) for arithmetic on single floats. The planner sweeps arrays. Each
operation here works on plain floats with ``math`` when every input is a Python scalar, and imports
numpy (lazily) only when one is not, with numpy's semantics kept on the scalar side where Python's
differ: ``minimum``/``maximum`` propagate NaN, ``ceil`` returns a float, division by zero is avoided
(``divide_where``) rather than raising, and a result is a ``float`` (as numpy's 0-d results collapse
to one through :func:`result`).

Arithmetic operators (``+ - * **``, and ``/`` by a denominator that cannot be zero) need no wrapper: on
floats they are the same IEEE double operations numpy's float64 performs, so a scalar figure is
bit-for-bit the array one (tests/test_live_numpy_free.py holds them to it). A denominator that may be
zero goes through :func:`divide` or :func:`divide_where`, since Python raises where numpy gives inf.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import ModuleType
from typing import Any

ArrayLike = Any  # float | np.ndarray; kept loose so scalars and arrays both type-check


def numpy() -> ModuleType:
    """numpy, imported on first use (the planner's arrays), never by the scalar path."""
    import numpy as np

    return np


def is_scalar(value: object) -> bool:
    """A Python number (bool, int, float, and numpy's float64, which subclasses float)."""
    return isinstance(value, (int, float))


def floats(value: ArrayLike) -> ArrayLike:
    """``np.asarray(value, float)``, but a Python float for a scalar."""
    if is_scalar(value):
        return float(value)
    return numpy().asarray(value, dtype=float)


def result(value: ArrayLike) -> ArrayLike:
    """A 0-d result back to a Python float, so scalar callers get scalars; arrays stay arrays."""
    if is_scalar(value):
        return float(value)
    arr = numpy().asarray(value, dtype=float)
    return float(arr) if arr.ndim == 0 else arr


def anywhere(cond: Any) -> bool:
    """``np.any``: whether the condition holds for some element."""
    if isinstance(cond, bool):
        return cond
    return bool(numpy().any(cond))


def everywhere(cond: Any) -> bool:
    """``np.all``: whether the condition holds for every element (False wherever a NaN was compared)."""
    if isinstance(cond, bool):
        return cond
    return bool(numpy().all(cond))


def isfinite(value: ArrayLike) -> Any:
    if is_scalar(value):
        return math.isfinite(value)
    return numpy().isfinite(value)


def minimum(a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """``np.minimum``: the smaller, NaN if either is NaN (Python's ``min`` would drop one)."""
    if is_scalar(a) and is_scalar(b):
        if a != a or b != b:
            return math.nan
        return float(a if a <= b else b)
    return numpy().minimum(a, b)


def maximum(a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """``np.maximum``: the larger, NaN if either is NaN."""
    if is_scalar(a) and is_scalar(b):
        if a != a or b != b:
            return math.nan
        return float(a if a >= b else b)
    return numpy().maximum(a, b)


def where(cond: Any, a: ArrayLike, b: ArrayLike) -> ArrayLike:
    """``np.where``; both branches are already computed, so neither may raise on the scalar path."""
    if isinstance(cond, bool) and is_scalar(a) and is_scalar(b):
        return float(a if cond else b)
    return numpy().where(cond, a, b)


def divide(num: ArrayLike, den: ArrayLike) -> ArrayLike:
    """``num / den`` by IEEE rules on the scalar path too (x/0 is +-inf, 0/0 NaN, as numpy gives), for a
    denominator that may be zero: a ceiling at a live clock of 0 Hz."""
    if is_scalar(num) and is_scalar(den):
        try:
            return num / den
        except ZeroDivisionError:
            if num != num or num == 0:
                return math.nan
            return math.copysign(math.inf, num) * math.copysign(1.0, den)
    return num / den


def divide_where(cond: Any, num: ArrayLike, den: ArrayLike, otherwise: ArrayLike) -> ArrayLike:
    """``num / den`` where ``cond`` holds, else ``otherwise``; the division is never made where it does
    not (a zero or negative denominator the condition excludes divides by 1 instead)."""
    return where(cond, num / where(cond, den, 1.0), otherwise)


def ceil(value: ArrayLike) -> ArrayLike:
    """``np.ceil``: a float (inf and NaN pass through, as numpy's do)."""
    if is_scalar(value):
        return float(math.ceil(value)) if math.isfinite(value) else float(value)
    return numpy().ceil(value)


def largest(value: ArrayLike) -> float:
    """``float(np.max(value))``."""
    if is_scalar(value):
        return float(value)
    return float(numpy().max(numpy().asarray(value, dtype=float)))


def ones_like(value: ArrayLike) -> ArrayLike:
    if is_scalar(value):
        return 1.0
    return numpy().ones_like(value)


def broadcast_like(value: ArrayLike, like: ArrayLike) -> ArrayLike:
    """``value`` in the shape of ``like`` (a copy), a float when both are scalars."""
    if is_scalar(value) and is_scalar(like):
        return float(value)
    np = numpy()
    return np.broadcast_to(value, np.shape(like)).copy()


def broadcast_all(values: Iterable[ArrayLike]) -> list[ArrayLike]:
    """Every value in one common shape (copies), each a float when all are scalars."""
    values = list(values)
    if all(is_scalar(v) for v in values):
        return [float(v) for v in values]
    np = numpy()
    return [result(a.copy()) for a in np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values))]


def total(values: Iterable[ArrayLike]) -> ArrayLike:
    """Left-to-right sum from 0.0 (not ``math.fsum``/compensated: the same additions as numpy's)."""
    out: ArrayLike = 0.0
    for v in values:
        out = out + floats(v)
    return out


def argmax_first(values: tuple[ArrayLike, ...]) -> Any:
    """``np.argmax`` over the stacked values (element-wise): the index of the largest, the first on a
    tie, the first NaN if any is NaN; an int for scalars."""
    if all(is_scalar(v) for v in values):
        best = 0
        for i, v in enumerate(values):
            if v != v:
                return i
            if v > values[best]:
                best = i
        return best
    np = numpy()
    return np.argmax(np.stack(np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values))), axis=0)


def to_plain(value: ArrayLike) -> Any:
    """JSON-ready: a float stays a float, an array becomes (nested) lists."""
    if is_scalar(value):
        return value
    return numpy().asarray(value).tolist()
