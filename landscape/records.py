r"""Result records: dataclasses that turn into plain values and back.

Every result of ``landscape`` (eigenpairs, estimates, densities, per-layer tables, surfaces,
learning rates, sharpness, coherence, reports) is a :class:`Record`. ``to_dict()`` returns
its fields as *plain values* — ``None``, ``bool``, ``int``, ``float`` (NaN and infinities
kept), ``str``, numpy arrays (a tensor becomes an array of its dtype; ``bfloat16`` becomes
``float32``, which numpy lacks), lists, tuples and dicts, a nested record as its own
dictionary — and ``from_dict()`` rebuilds an equal record, reading each field's type from
its annotation (arrays back into tensors where the field is a ``Tensor``, dicts back into
records). Reports store records in HDF5 this way (:mod:`landscape.report.codec`);
:meth:`Record.to_json` gives a JSON string (non-finite floats as ``"nan"``, ``"inf"``,
``"-inf"``, which ``float()`` reads back).

A field whose ``metadata`` has ``"record": False`` is left out (``from_dict`` gives its
default). ``from_dict`` ignores keys it does not know (a newer writer's extra fields) and
fills missing ones with their defaults.

Examples
--------
>>> from dataclasses import dataclass
>>> import torch
>>> @dataclass(frozen=True)
... class Measured(Record):
...     value: float
...     samples: torch.Tensor
...     note: str | None = None
>>> m = Measured(1.5, torch.tensor([1.0, 2.0]))
>>> d = m.to_dict()
>>> type(d["samples"]).__name__
'ndarray'
>>> Measured.from_dict(d).samples
tensor([1., 2.])
>>> Measured.from_dict({"value": "inf", "samples": [0.0]}).value
inf
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar, Union

import numpy as np
import torch

__all__ = ["Record", "jsonable", "plain"]

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for result dataclasses: :meth:`to_dict`, :meth:`from_dict`, :meth:`to_json`.

    A subclass that renames a field lists ``{old name: new name}`` in ``_renamed``, so
    that files written under the old name still load.
    """

    _renamed: typing.ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain values (see the module documentation).

        Returns
        -------
        dict
            Field name to plain value, in field order.
        """
        return {f.name: plain(getattr(self, f.name)) for f in _stored_fields(type(self))}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Rebuild a record from :meth:`to_dict`'s output (or a JSON load of :meth:`to_json`).

        Parameters
        ----------
        data : mapping
            Field name to plain value; unknown names are ignored, missing ones take their
            default.

        Returns
        -------
        Record
            An instance of ``cls``.

        Raises
        ------
        TypeError
            If ``data`` is not a mapping.
        ValueError
            If a field without a default is missing.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict needs a dict; got {type(data).__name__}.")
        hints = _hints(cls)
        values = {}
        data = {**{new: data[old] for old, new in cls._renamed.items() if old in data}, **data}
        for f in _stored_fields(cls):
            if f.name in data:
                values[f.name] = restore(hints[f.name], data[f.name])
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{cls.__name__}.from_dict: the field {f.name!r} is missing.")
        return cls(**values)

    def to_json(self) -> str:
        """Return :meth:`to_dict` as a JSON string (non-finite floats as strings).

        Returns
        -------
        str
            Valid JSON (``allow_nan=False``).
        """
        return json.dumps(jsonable(self.to_dict()), allow_nan=False)


@cache
def _stored_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.metadata.get("record", True))


@cache
def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    namespace = {"torch": torch, "np": np, "Tensor": torch.Tensor, "typing": typing}
    namespace.update(vars(module) if module is not None else {})
    return typing.get_type_hints(cls, globalns=namespace)


def plain(value: Any) -> Any:
    """Convert a value to plain values: records to dicts, tensors to numpy arrays.

    Parameters
    ----------
    value : Any
        A record, tensor, array, container or scalar.

    Returns
    -------
    Any
        The same structure made of plain values.
    """
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()  # numpy has no bfloat16
        return tensor.numpy().copy()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def restore(hint: Any, value: Any) -> Any:
    """Convert a plain value back into the type ``hint`` names (the inverse of :func:`plain`).

    Parameters
    ----------
    hint : type or typing form
        A field's annotation.
    value : Any
        The plain value.

    Returns
    -------
    Any
        The value as that type where it can be converted, else unchanged.
    """
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        chosen = options[0] if len(options) == 1 else _matching(options, value)
        return value if chosen is None else restore(chosen, value)
    if origin is typing.Literal:
        return value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value) if isinstance(value, Mapping) else value
    if hint is torch.Tensor:
        return torch.from_numpy(np.array(value))
    if hint is np.ndarray:
        return np.array(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(restore(args[0], v) for v in value)
        if args:
            return tuple(restore(a, v) for a, v in zip(args, value, strict=False))
        return tuple(value)
    if origin is list:
        return [restore(args[0] if args else Any, v) for v in value]
    if origin in (dict, Mapping):
        inner = args[1] if len(args) == 2 else Any
        return {k: restore(inner, v) for k, v in value.items()}
    return _scalar(hint, value)


def _matching(options: list[Any], value: Any) -> Any:
    # The first option of a union that the plain value can be: a dict for a record, an array
    # or list for tensors and arrays, a scalar for scalar types.
    for option in options:
        origin = typing.get_origin(option) or option
        if isinstance(option, type) and issubclass(option, Record) and isinstance(value, Mapping):
            return option
        if origin in (torch.Tensor, np.ndarray, list, tuple) and isinstance(
            value, (np.ndarray, list, tuple)
        ):
            return option
        if origin in (dict, Mapping) and isinstance(value, Mapping):
            return option
        if origin in (float, int, bool, str) and isinstance(
            value, (float, int, bool, str, np.generic)
        ):
            return option
    return None


def _scalar(hint: Any, value: Any) -> Any:
    if hint is float and isinstance(value, (int, float, str, np.generic)):
        return float(value)
    if hint is int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if hint is bool and isinstance(value, (bool, np.bool_)):
        return bool(value)
    if hint is str and isinstance(value, (str, np.str_)):
        return str(value)
    return value


def _json_float(x: float) -> float | str:
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def jsonable(value: Any, where: str = "value") -> Any:
    """Convert plain values (and records, tensors) to JSON-serializable ones.

    Arrays become (nested) lists, tuples lists, numpy scalars Python scalars, and non-finite
    floats the strings ``"nan"``, ``"inf"`` and ``"-inf"``.

    Parameters
    ----------
    value : Any
        What to convert.
    where : str, optional
        Its name, for error messages.

    Returns
    -------
    Any
        ``json.dumps(..., allow_nan=False)`` accepts it.

    Raises
    ------
    TypeError
        For a value of another type.

    Examples
    --------
    >>> jsonable({"x": np.array([1.0, np.inf]), "n": np.int64(3)})
    {'x': [1.0, 'inf'], 'n': 3}
    """
    if isinstance(value, Record):
        value = value.to_dict()
    if value is None or isinstance(value, (bool, str)):
        return str(value) if isinstance(value, np.str_) else value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(float(value))
    if isinstance(value, (complex, np.complexfloating)):
        return {"real": _json_float(value.real), "imag": _json_float(value.imag)}
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        value = plain(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biu":
            return value.tolist()
        if value.dtype.kind == "f" and np.isfinite(value).all():
            return value.tolist()
        if value.dtype.kind == "O":
            return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value.tolist())]
        return jsonable(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"{where}: cannot convert a {type(value).__name__} to JSON.")
