r"""The HDF5 files of reports: plain values in, plain values out, written atomically.

A report file holds one document's :meth:`~landscape.records.Record.to_dict` (plain values:
``None``, ``str``, ``bool``, ``int``, ``float``, numpy arrays and scalars, lists, tuples and
dictionaries with string keys) and says what it is in root attributes.

Encoding (``format = "landscape.report"``)
------------------------------------------
The root group has the attributes ``format``, ``format_version`` (int), ``kind``
(``"report"`` or ``"comparison"``) and ``landscape_version``; the data is the group ``data``.
A value stored under a name in a group is

* ``None``: an attribute with a null dataspace (``h5py.Empty("i1")``);
* ``str``: a UTF-8 string attribute; ``bool``: a numpy-bool attribute (HDF5 enum);
  ``int`` (int64 range): an int64 attribute; ``float``: a float64 attribute (NaN and
  infinities as such); an ``int`` beyond int64: a string dataset with ``@kind = "bigint"``;
* a numpy array (any shape, empty included): a dataset with ``@kind = "ndarray"``, in its
  own dtype; unicode arrays are variable-length UTF-8 with their dtype in ``@dtype``;
* a numpy scalar: a 0-d dataset with ``@kind = "scalar"``;
* a dictionary: a group with ``@type = "dict"`` and ``@keys`` (its keys in order); each
  entry is stored under its escaped key (``%`` → ``%25``, ``/`` → ``%2F``, NUL → ``%00``,
  a leading ``.`` or ``@`` → ``%2E``/``%40``, the empty key → ``%``);
* a list or tuple whose items (ignoring ``None``) are all ``float``, all ``int``, all
  ``bool`` or all ``str``: a 1-D dataset with ``@kind = "list"`` or ``"tuple"``, ``@item``
  (the item type) and, if some items are ``None``, ``@none`` (their indices);
* any other list or tuple (empty, mixed, of dictionaries, of lists, ...): a group with
  ``@type = "list"`` or ``"tuple"`` and ``@length``, item ``i`` stored under the name ``"i"``.

Names starting with ``@`` are reserved for these tags. Reading gives back the same
structure with the same types (``np.str_`` values come back as ``str``, dictionary
subclasses as ``dict``). Files are written to a temporary file beside the target, synced,
then renamed over it, so an interrupted save leaves the previous file intact.

Versions
--------
1. The sections as nested dictionaries of the analysis' own layout (landscape 0.1 before
   typed documents); read through :mod:`landscape.report.migrate`.
2. Each section is its result record's ``to_dict()``.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from landscape._paths import check_writable

__all__ = ["FORMAT", "FORMAT_VERSION", "atomic_write", "read", "write"]

FORMAT = "landscape.report"
"""Value of the root attribute ``format`` of report files."""
FORMAT_VERSION = 2
"""Version of the encoding written (and the newest read)."""


_INT64 = (-(2**63), 2**63 - 1)
_ESCAPED = re.compile(r"%([0-9A-F]{2})")


def _escape(key: str) -> str:
    if key == "":
        return "%"
    out = key.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if out[0] in ".@":
        out = f"%{ord(out[0]):02X}{out[1:]}"
    return out


def _unescape(name: str) -> str:
    if name == "%":
        return ""
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), name)


def _check_text(text: str, where: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{where}: strings with NUL characters cannot be stored in HDF5.")
    return str(text)


def _item_type(values: Sequence[Any]) -> str | None:
    # The common type of a list's items (None ignored) when it fits a 1-D dataset.
    kinds = set()
    for v in values:
        if v is None:
            continue
        t = type(v)
        if t is int and not _INT64[0] <= v <= _INT64[1]:
            return None
        if t not in (bool, int, float, str):
            return None
        kinds.add(t.__name__)
        if len(kinds) > 1:
            return None
    return kinds.pop() if kinds else None


def _write_value(group: Any, name: str, value: Any, where: str) -> None:
    import h5py

    attrs = group.attrs
    if value is None:
        attrs[name] = h5py.Empty("i1")
    elif isinstance(value, str):
        attrs[name] = _check_text(value, where)
    elif isinstance(value, bool):
        attrs[name] = np.bool_(value)
    elif isinstance(value, np.generic):
        if value.dtype.kind in "OUVMm":
            raise TypeError(f"{where}: cannot store a numpy {value.dtype} scalar.")
        group.create_dataset(name, data=value).attrs["@kind"] = "scalar"
    elif isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            attrs[name] = np.int64(value)
        else:
            data = group.create_dataset(name, data=str(int(value)), dtype=h5py.string_dtype())
            data.attrs["@kind"] = "bigint"
    elif isinstance(value, float):
        attrs[name] = np.float64(value)
    elif isinstance(value, np.ndarray):
        _write_array(group, name, value, where)
    elif isinstance(value, Mapping):
        sub = group.create_group(name, track_order=True)
        _write_dict(sub, value, where)
    elif isinstance(value, (list, tuple)):
        _write_sequence(group, name, value, where)
    else:
        raise TypeError(
            f"{where}: cannot store a {type(value).__name__} (reports hold str, int, float, "
            "bool, None, lists, tuples, dicts and numpy arrays; convert tensors with .numpy())."
        )


def _write_array(group: Any, name: str, value: np.ndarray, where: str) -> None:
    import h5py

    kind = value.dtype.kind
    if kind == "U":
        texts = [_check_text(str(t), where) for t in value.reshape(-1).tolist()]
        data = np.array(texts, dtype=object).reshape(value.shape)
        ds = group.create_dataset(name, data=data, dtype=h5py.string_dtype())
        ds.attrs["@dtype"] = value.dtype.str
    elif kind in "biufcS":
        ds = group.create_dataset(name, data=value)
    else:
        raise TypeError(f"{where}: cannot store a numpy array of dtype {value.dtype}.")
    ds.attrs["@kind"] = "ndarray"


def _write_sequence(group: Any, name: str, value: list[Any] | tuple[Any, ...], where: str) -> None:
    import h5py

    kind = "tuple" if isinstance(value, tuple) else "list"
    item = _item_type(value)
    if item is None:
        sub = group.create_group(name, track_order=True)
        sub.attrs["@type"] = kind
        sub.attrs["@length"] = np.int64(len(value))
        for i, v in enumerate(value):
            _write_value(sub, str(i), v, f"{where}[{i}]")
        return
    nones = [i for i, v in enumerate(value) if v is None]
    if item == "str":
        texts = ["" if v is None else _check_text(v, f"{where}[{i}]") for i, v in enumerate(value)]
        ds = group.create_dataset(
            name, data=np.array(texts, dtype=object), dtype=h5py.string_dtype()
        )
    else:
        dtype, fill = {"float": (np.float64, np.nan), "int": (np.int64, 0), "bool": (bool, False)}[
            item
        ]
        data = np.array([fill if v is None else v for v in value], dtype=dtype)
        ds = group.create_dataset(name, data=data)
    ds.attrs["@kind"] = kind
    ds.attrs["@item"] = item
    if nones:
        ds.attrs["@none"] = np.array(nones, dtype=np.int64)


def _write_dict(group: Any, value: Mapping[Any, Any], where: str) -> None:
    import h5py

    group.attrs["@type"] = "dict"
    names = []
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{where}: dictionary keys must be strings; got {key!r}.")
        names.append(_escape(_check_text(key, f"{where} (a key)")))
    if names:
        group.attrs.create("@keys", np.array(names, dtype=object), dtype=h5py.string_dtype())
    for name, (key, v) in zip(names, value.items()):
        _write_value(group, name, v, f"{where}/{key}")


def _corrupt(where: str, what: str) -> ValueError:
    return ValueError(f"corrupt landscape report: {where}: {what}.")


def _read_attr(value: Any, where: str) -> Any:
    import h5py

    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise _corrupt(where, f"unexpected attribute {value!r}")


def _read_entry(group: Any, name: str, where: str) -> Any:
    import h5py

    if name in group.attrs:
        return _read_attr(group.attrs[name], where)
    obj = group.get(name)
    if isinstance(obj, h5py.Group):
        return _read_group(obj, where)
    if isinstance(obj, h5py.Dataset):
        return _read_dataset(obj, where)
    raise _corrupt(where, "missing")


def _read_dataset(ds: Any, where: str) -> Any:
    kind = ds.attrs.get("@kind")
    if kind == "ndarray":
        dtype = ds.attrs.get("@dtype")
        if dtype is not None:
            return np.array(ds.asstr()[()], dtype=np.dtype(str(dtype))).reshape(ds.shape)
        value = ds[()]
        return np.asarray(value) if ds.shape == () else value
    if kind == "scalar":
        value = ds[()]
        if not isinstance(value, np.generic):
            raise _corrupt(where, "a scalar dataset that is not a numpy scalar")
        return value
    if kind == "bigint":
        return int(ds.asstr()[()])
    if kind in ("list", "tuple"):
        item = ds.attrs.get("@item")
        if item == "str":
            items = list(ds.asstr()[()].tolist())
        elif item in ("float", "int", "bool"):
            items = ds[()].tolist()
        else:
            raise _corrupt(where, f"unknown list item type {item!r}")
        for i in ds.attrs.get("@none", np.zeros(0, dtype=np.int64)).tolist():
            items[i] = None
        return tuple(items) if kind == "tuple" else items
    raise _corrupt(where, f"unknown dataset kind {kind!r}")


def _read_group(group: Any, where: str) -> Any:
    kind = group.attrs.get("@type")
    if kind == "dict":
        names = group.attrs.get("@keys")
        names = [] if names is None else [str(n) for n in names.tolist()]
        return {_unescape(n): _read_entry(group, n, f"{where}/{_unescape(n)}") for n in names}
    if kind in ("list", "tuple"):
        length = int(group.attrs.get("@length", -1))
        if length < 0:
            raise _corrupt(where, "a sequence without @length")
        items = [_read_entry(group, str(i), f"{where}[{i}]") for i in range(length)]
        return tuple(items) if kind == "tuple" else items
    raise _corrupt(where, f"unknown group type {kind!r}")


def landscape_version() -> str:
    """Return the installed landscape's version ("unknown" in a bare source tree).

    Returns
    -------
    str
        The version.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("landscape")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _temporary(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _sync_directory(path: str) -> None:
    # Make the rename durable where the platform allows it (POSIX); best effort.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], None], what: str = "report"
) -> str:
    """Write a file by ``write(temporary)`` beside ``path``, sync it, rename it over ``path``.

    A crash or kill during the write leaves the previous file (or none), never a partial one.

    Parameters
    ----------
    path : str or PathLike
        The target.
    write : callable
        Writes the whole file at the temporary path it is given.
    what : str, optional
        What the file is, for error messages.

    Returns
    -------
    str
        The path written.
    """
    target = check_writable(path, what)
    temporary = _temporary(target)
    try:
        write(temporary)
        with open(temporary, "r+b") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _sync_directory(target)
    return target


def write(path: str | os.PathLike[str], kind: str, data: Mapping[str, Any]) -> str:
    """Write plain ``data`` as a document of ``kind`` to an HDF5 file, atomically.

    Parameters
    ----------
    path : str or PathLike
        The file; replaced if it exists.
    kind : {"report", "comparison"}
        What the document is.
    data : mapping
        Plain values (see the module documentation).

    Returns
    -------
    str
        The path written.
    """
    import h5py

    def write_file(temporary: str) -> None:
        with h5py.File(temporary, "w-") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            f.attrs["kind"] = kind
            f.attrs["landscape_version"] = landscape_version()
            _write_dict(f.create_group("data", track_order=True), data, "data")
            f.flush()

    return atomic_write(path, write_file)


def read(path: str | os.PathLike[str]) -> tuple[str, int, dict[str, Any]]:
    """Read the report file at ``path``: its kind, its format version and its plain data.

    The reading behind :func:`landscape.load`, whose documentation says what users see.

    Returns
    -------
    kind : str
        ``"report"`` or ``"comparison"``.
    version : int
        The format version it was written in.
    data : dict
        The plain values.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    PermissionError
        From :class:`h5py.File`, if the file cannot be opened.
    ValueError
        If it is no HDF5 file, has no ``format`` attribute :data:`FORMAT`, a newer
        ``format_version`` than :data:`FORMAT_VERSION`, an unknown ``kind`` or no data
        group, or its data cannot be decoded.
    """
    import h5py

    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"no landscape report at {name!r}: the file does not exist.")
    if os.path.isdir(name) or not h5py.is_hdf5(name):
        raise ValueError(f"{name!r} is not a landscape report: it is not an HDF5 file.")
    try:
        handle = h5py.File(name, "r")
    except PermissionError:
        raise
    except OSError as error:
        raise ValueError(f"{name!r} is not a readable landscape report: {error}") from error
    with handle as f:
        found = f.attrs.get("format")
        if isinstance(found, bytes):
            found = found.decode("utf-8", "replace")
        if found != FORMAT:
            what = "no 'format' attribute" if found is None else f"format {found!r}"
            raise ValueError(
                f"{name!r} is not a landscape report: an HDF5 file with {what}, not {FORMAT!r}."
            )
        version = f.attrs.get("format_version")
        if not isinstance(version, (int, np.integer)):
            raise ValueError(f"{name!r} is a corrupt landscape report: no format_version.")
        if int(version) > FORMAT_VERSION:
            raise ValueError(
                f"{name!r} is a landscape report of format version {int(version)}, newer than "
                f"version {FORMAT_VERSION} that this landscape ({landscape_version()}) reads; "
                "upgrade landscape to open it."
            )
        kind = f.attrs.get("kind")
        if kind not in ("report", "comparison"):
            raise ValueError(f"{name!r} is a corrupt landscape report: unknown kind {kind!r}.")
        if not isinstance(f.get("data"), h5py.Group):
            raise ValueError(f"{name!r} is a corrupt landscape report: no data group.")
        try:
            data = _read_group(f["data"], "data")
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise ValueError(f"{name!r}: {error}") from error
    return str(kind), int(version), data
