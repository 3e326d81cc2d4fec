r"""Reading models and weights from files without running code from them.

A file written by ``torch.save`` is a pickle, and unpickling can call any Python function the
file names: a downloaded checkpoint that carries a payload runs it on ``torch.load(...,
weights_only=False)``. PyTorch made ``weights_only=True`` the default of ``torch.load`` in 2.6
for this reason. landscape reads every file in a way that cannot run code, unless the caller
opts in with ``allow_pickle=True`` (the CLI's ``--allow-pickle``):

* ``.safetensors`` files: :func:`safetensors.torch.load_file` (a header and raw tensors);
* files written by ``torch.save``: ``torch.load(weights_only=True)``, which unpickles only
  tensors, containers and primitive types; anything else is refused by name
  (:class:`UnsafeCheckpointError`, listing the classes and functions the file would import,
  read with ``torch.serialization.get_unsafe_globals_in_checkpoint`` without executing them);
* Hugging Face model directories (``save_pretrained``): the architecture the config names,
  built by ``transformers`` from the local files only, ``trust_remote_code=False`` (code
  shipped in the directory is never imported) and its weights through the same safe loaders.

Examples
--------
>>> import tempfile, pathlib, torch
>>> path = pathlib.Path(tempfile.mkdtemp()) / "weights.pt"
>>> torch.save({"weight": torch.ones(2)}, path)
>>> load_state_dict(path)["weight"]
tensor([1., 1.])
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "UnsafeCheckpointError",
    "is_pretrained_directory",
    "load_object",
    "load_pretrained",
    "load_state_dict",
    "unwrap_state_dict",
]

_STATE_KEYS = ("state_dict", "model_state_dict", "model")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A file can only be read by unpickling objects, which may run code from the file."""


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an old torch, or a file in the legacy format: say less, refuse anyway
        return []


def load_object(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """Read what a file written by ``torch.save`` (or a ``.safetensors`` file) holds.

    Parameters
    ----------
    path : str or Path
        The file.
    allow_pickle : bool, optional
        Unpickle arbitrary objects (``torch.load(weights_only=False)``), which runs code the
        file names: only for files you trust. Default: refuse such files.

    Returns
    -------
    object
        A dict of tensors for ``.safetensors``; whatever ``torch.save`` stored otherwise.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    UnsafeCheckpointError
        If the file holds objects other than tensors, containers and primitive types and
        ``allow_pickle`` is false: the message names them and the opt-in.
    ImportError
        For a ``.safetensors`` file when the ``safetensors`` package is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError(
                f"reading {str(path)!r} needs the safetensors package: pip install safetensors"
            ) from error
        return load_file(str(path), device="cpu")
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        names = _unsafe_globals(path)
        held = f"Python objects ({', '.join(names[:6])})" if names else "pickled Python objects"
        raise UnsafeCheckpointError(
            f"{str(path)!r} holds {held}, not only tensors: reading it means unpickling, which "
            "runs code named by the file. It was not read. If you trust the file, opt in with "
            "allow_pickle=True (on the command line: --allow-pickle); better, save "
            "model.state_dict() (or use safetensors) and load it into a model you build."
        ) from error


def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Return the state dict inside what a checkpoint holds.

    Accepts a state dict, a module, or a dict with a ``"state_dict"``, ``"model_state_dict"``
    or ``"model"`` entry (the layouts of common training scripts and Lightning).

    Parameters
    ----------
    obj : Any
        What the checkpoint file holds.

    Returns
    -------
    dict of str to Tensor
        The state dict.

    Raises
    ------
    TypeError
        If ``obj`` holds no state dict.

    Examples
    --------
    >>> sorted(unwrap_state_dict({"epoch": 3, "state_dict": {"w": torch.ones(1)}}))
    ['w']
    """
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        raise TypeError(f"it holds a {type(obj).__name__}, not a state_dict or model.")
    if obj and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and all(isinstance(v, Tensor) for v in inner.values()):
                return inner
        raise TypeError(
            f"it is a dict but not a state_dict (entries {list(obj)[:6]}); save model.state_dict()."
        )
    return obj


def load_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Read a state dict from a ``torch.save`` or ``.safetensors`` file, running no code.

    Parameters
    ----------
    path : str or Path
        The file.
    allow_pickle : bool, optional
        See :func:`load_object`.

    Returns
    -------
    dict of str to Tensor
        The state dict (unwrapped as in :func:`unwrap_state_dict`).

    Raises
    ------
    TypeError
        If the file holds no state dict.
    """
    obj = load_object(path, allow_pickle=allow_pickle)
    try:
        return unwrap_state_dict(obj)
    except TypeError as error:
        raise TypeError(f"checkpoint {str(path)!r}: {error}") from None


def is_pretrained_directory(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by Hugging Face ``save_pretrained``.

    Returns
    -------
    bool
        True when it holds a ``config.json``.
    """
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def _weight_files(directory: Path) -> list[str]:
    patterns = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.index.json")
    return sorted({p.name for pattern in patterns for p in directory.glob(pattern)})


def load_pretrained(path: str | Path) -> nn.Module:
    """Build a Hugging Face model from a local ``save_pretrained`` directory, running no code.

    The class is the one ``config.json`` names in ``architectures`` (e.g.
    ``GPT2LMHeadModel``), looked up in ``transformers`` itself: ``trust_remote_code`` is off,
    so modelling code shipped in the directory is never imported. Only local files are read
    (``local_files_only=True``: nothing is downloaded), and weights load through safetensors,
    or ``torch.load(weights_only=True)`` for ``pytorch_model.bin``.

    Parameters
    ----------
    path : str or Path
        The directory.

    Returns
    -------
    torch.nn.Module
        The model, on the CPU, in eval mode.

    Raises
    ------
    ImportError
        If ``transformers`` is not installed.
    ValueError
        If the directory is not a ``save_pretrained`` one, its config names no architecture
        or one that ``transformers`` does not ship, or it holds no weights.
    """
    directory = Path(path)
    if not is_pretrained_directory(directory):
        raise ValueError(
            f"{str(directory)!r} is not a Hugging Face model directory (no config.json)."
        )
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f"loading the Hugging Face model directory {str(directory)!r} needs transformers: "
            "pip install transformers"
        ) from error
    config = json.loads((directory / "config.json").read_text())
    names = config.get("architectures") or []
    if not names:
        raise ValueError(
            f"{str(directory)!r}: config.json names no architecture ('architectures'); build the "
            "model with a factory (--model MODULE:FACTORY) and give its weights with --checkpoint."
        )
    cls = getattr(transformers, names[0], None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"{str(directory)!r}: architecture {names[0]!r} is not part of transformers "
            f"{transformers.__version__}; its code would come from the directory, which is not "
            "run. Build the model with a factory (--model MODULE:FACTORY) instead."
        )
    if not _weight_files(directory):
        raise ValueError(f"{str(directory)!r} holds no weights (no .safetensors or .bin file).")
    model = cls.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False, weights_only=True
    )
    return model.eval()
