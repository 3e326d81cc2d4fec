r"""Loss surfaces on grids :math:`\theta_0 + \sum_a c_a d_a`: vectorized, resumable, distributed.

Speed comes from evaluating many grid points in one pass over the data: the parameters of
a chunk of points are stacked and ``torch.func.functional_call`` runs under ``vmap`` over
them, while the batches stay cached on the device. The chunk partition of the grid is
fixed by the settings, so a resumed run recomputes whole chunks exactly as an
uninterrupted run would: results are bitwise identical.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed
from landscape._fingerprint import data_fingerprint, describe, fingerprint
from landscape._paths import check_writable
from landscape.batches import concatenate
from landscape.data import Batch, DataSource
from landscape.losses import Criterion, Objective
from landscape.problem import Evaluation, Problem, as_problem
from landscape.records import Record

__all__ = ["GridOptions", "Surface", "evaluate_grid", "surface"]

BNPolicy = Literal["eval", "recompute", "batch"]
_METRICS = ("loss", "accuracy")
_FORMAT = "landscape.surface"


@dataclass(frozen=True)
class Surface(Record):
    """Loss (and accuracy) on a 1-D or 2-D grid around a model.

    Attributes
    ----------
    coords : tuple of numpy.ndarray
        Coordinates along each direction.
    loss : numpy.ndarray
        Mean loss at each grid point, shape ``(n1,)`` or ``(n1, n2)``.
    accuracy : numpy.ndarray or None
        Classification accuracy at each point (``None`` when undefined for the task).
    origin_loss : float
        Loss of the unperturbed model (coordinate 0, evaluated exactly).
    origin_accuracy : float or None
        Its accuracy.
    settings : dict
        Everything that defines the surface (directions' description, BN policy, ...).
    num_points : int
        Grid points evaluated in this call (0 when fully resumed from a file).
    seconds : float
        Wall time of this call.
    path : str or None
        The HDF5 file holding the results, if any.
    """

    coords: tuple[np.ndarray, ...]
    loss: np.ndarray
    accuracy: np.ndarray | None
    origin_loss: float
    origin_accuracy: float | None
    settings: dict[str, Any] = field(repr=False)
    num_points: int = 0
    seconds: float = 0.0
    path: str | None = None

    @property
    def ndim(self) -> int:
        """Number of directions (1 or 2)."""
        return len(self.coords)

    def barrier(self) -> float:
        r"""Loss barrier of a 1-D path between coordinates 0 and 1.

        .. math::
            B = \max_{t\in[0,1]} \Big( L(t) - \big((1-t) L(0) + t L(1)\big) \Big)

        (Frankle et al. 2020; Ainsworth et al. 2023, "Git Re-Basin"). Zero or less means the
        two endpoints are linearly mode-connected.

        Returns
        -------
        float
            The barrier height, over the grid points in ``[0, 1]``.

        Raises
        ------
        ValueError
            If the surface is not 1-D or lacks the coordinates 0 and 1.
        """
        if self.ndim != 1:
            raise ValueError("barrier() needs a 1-D path (see landscape.interpolate).")
        t = self.coords[0]
        if not (np.any(t == 0.0) and np.any(t == 1.0)):
            raise ValueError("barrier() needs the grid to contain t = 0 and t = 1 exactly.")
        inside = (t >= 0) & (t <= 1)
        l0, l1 = float(self.loss[t == 0.0][0]), float(self.loss[t == 1.0][0])
        return float(np.max(self.loss[inside] - ((1 - t[inside]) * l0 + t[inside] * l1)))

    def width(self, threshold: float, axis: int = 0) -> float:
        """Width of the basin around coordinate 0 along one axis, at a loss threshold.

        The distance between the first grid points on either side of 0 (on the line through
        the origin along ``axis``) whose loss exceeds ``origin_loss + threshold``; grid ends
        count when the loss never exceeds it (a lower bound then).

        Parameters
        ----------
        threshold : float
            Loss increase defining the basin.
        axis : int, optional
            Direction index.

        Returns
        -------
        float
            Width in coordinate units.

        Raises
        ------
        ValueError
            If the grid does not contain coordinate 0 on the other axes.
        """
        line = self._line(axis)
        t = self.coords[axis]
        outside = line > self.origin_loss + threshold
        right = t[(t > 0) & outside]
        left = t[(t < 0) & outside]
        hi = right.min() if right.size else t.max()
        lo = left.max() if left.size else t.min()
        return float(hi - lo)

    def curvature_at_origin(self, axis: int = 0) -> float:
        r"""Second difference of the loss at 0 along an axis: :math:`(L_{+h} - 2L_0 + L_{-h})/h^2`.

        For a direction :math:`d`, this approximates :math:`d^\top H d` (a cross-check against
        the Hessian operator's Rayleigh quotient) when the grid spacing is small.

        Parameters
        ----------
        axis : int, optional
            Direction index.

        Returns
        -------
        float
            The finite-difference curvature.

        Raises
        ------
        ValueError
            If 0 has no neighbours at equal distance on the grid.
        """
        line = self._line(axis)
        t = self.coords[axis]
        i = int(np.flatnonzero(t == 0.0)[0]) if np.any(t == 0.0) else -1
        if i <= 0 or i >= t.size - 1 or not math.isclose(t[i + 1], -t[i - 1], rel_tol=1e-9):
            raise ValueError("curvature_at_origin needs coordinates -h, 0, h on the axis.")
        h = float(t[i + 1])
        return float((line[i + 1] - 2 * line[i] + line[i - 1]) / h**2)

    def _line(self, axis: int) -> np.ndarray:
        if self.ndim == 1:
            return self.loss
        other = 1 - axis
        zero = np.flatnonzero(self.coords[other] == 0.0)
        if not zero.size:
            raise ValueError("the grid has no coordinate 0 on the other axis.")
        return self.loss[:, zero[0]] if axis == 0 else self.loss[zero[0], :]


_SEPARABLE = (
    nn.CrossEntropyLoss,
    nn.NLLLoss,
    nn.MSELoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.HuberLoss,
    nn.BCEWithLogitsLoss,
    nn.BCELoss,
)


def _snap(coords: Any) -> np.ndarray:
    c = np.asarray(coords, dtype=np.float64).reshape(-1)
    if c.size == 0:
        raise ValueError("coords must not be empty.")
    c[np.abs(c) < 1e-12 * max(1.0, float(np.abs(c).max()))] = 0.0
    return c


def _data_fingerprint(source: DataSource) -> str:
    # Every batch's bytes (one pass; surfaces need many more) and the sample count.
    return data_fingerprint((batch.data for batch in source), source.num_samples)


def _separable(objective: Objective, batch: Any) -> bool:
    # Losses whose batch value is the weighted mean of per-sample terms, so that batches
    # can be merged: standard criteria, this package's and the default. A model's own loss
    # is never merged: it might couple the samples of a batch (contrastive terms), and
    # Hugging Face heads compute it in float32 whatever the model's dtype, so a merged
    # batch would differ from the batches' weighted mean by float32 rounding.
    fn = objective.loss_fn
    if objective.batch_loss is not None:
        return False
    if fn is None:
        return not objective.own_loss(batch)
    if callable(getattr(fn, "count", None)):
        return True
    return (
        type(fn) in _SEPARABLE
        and getattr(fn, "reduction", "mean") == "mean"
        and getattr(fn, "weight", None) is None
        and getattr(fn, "pos_weight", None) is None
    )


def _loss_and_correct(
    objective: Objective, loss: Tensor, outputs: Any, batch: Any
) -> tuple[Tensor, Tensor, Tensor]:
    # The loss, correct predictions and their units (NaN and 0 where accuracy is undefined).
    hits = objective.correct(outputs, batch)
    if hits is None:
        nan = torch.full_like(loss, math.nan, dtype=torch.float64)
        return loss, nan, torch.zeros_like(nan)
    return loss, hits[0].double(), hits[1].double()


class _Evaluator:
    """Mean loss and accuracy of many parameter vectors over the data.

    Both ways go through :meth:`Problem.reduce <landscape.problem.Problem.reduce>`, the one
    data loop: vectorized over the points of a chunk (``vmap`` of functional calls), or
    point by point on a private copy of the model whose weights are written in place.
    """

    def __init__(self, problem: Problem, bn: BNPolicy, vectorize: bool) -> None:
        self.problem = problem
        self.objective = problem.objective
        self.bn = bn
        self.vectorize = vectorize
        self.module = problem.model
        self._copy: Problem | None = None
        if bn == "recompute" or not vectorize:
            # A private copy: recomputed running statistics, or weights written in place
            # point by point.
            self.module = copy.deepcopy(problem.model)
            mode = "train" if bn == "batch" else "eval"
            self._copy = self._merged(problem.with_model(self.module)).with_evaluation(mode=mode)
        self.batchnorms = [
            m for m in self.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    def _merged(self, problem: Problem) -> Problem:
        # For a per-sample mean criterion in eval mode, the weighted mean over batches
        # equals the mean over their concatenation: evaluate one merged batch (far fewer
        # small kernel calls per point). Other losses keep the user's batches.
        items = [b.data for b in problem.batches()]
        if self.bn == "batch" or len(items) < 2 or not _separable(self.objective, items[0]):
            return problem
        try:
            merged = concatenate(items, pad=self.objective.can_pad(items[0]))
        except (TypeError, RuntimeError):
            return problem  # batches of different layouts: keep them
        return problem.with_data(merged, cache=True, shard=False)

    def __call__(
        self, states: dict[str, Tensor], constants: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        # Return mean loss and accuracy (float64, CPU) for stacked states (dim 0 = points).
        with torch.no_grad():
            if self._copy is not None:
                return self._loop(states, constants)
            return self._vectorized(states, constants)

    def _totals(self, problem: Problem, part: Any) -> tuple[Tensor, Tensor]:
        # Sums of weighted losses, correct predictions and units, then the two means.
        sums = problem.reduce(part, mean=False, check_finite=False)
        return sums[0] / problem.total_weight, sums[1] / sums[2]

    def _vectorized(
        self, states: dict[str, Tensor], constants: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        def part(run: Evaluation, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
            def point(state: dict[str, Tensor], data: Any, weight: float) -> tuple:
                loss, outputs = run.call_forward({**constants, **state}, data, weight)
                return _loss_and_correct(self.objective, loss, outputs, data)

            points = self.problem.vectorize(point, "loss-surface grid points", (0, None, None))
            loss, correct, units = points(states, batch.data, batch.weight)
            return batch.weight * loss.double(), correct, units

        loss, accuracy = self._totals(self.problem, part)
        return loss.cpu(), accuracy.cpu()

    def _loop(
        self, states: dict[str, Tensor], constants: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        # Point by point on the private copy: write the point's parameters (and moving
        # buffers) in place, then a plain forward pass per batch. On CPU this beats vmap,
        # whose batched small matmuls are slower than one large one. With bn="recompute",
        # first re-estimate the BatchNorm running statistics as a cumulative average over
        # the whole data (momentum=None, train mode), as mode-connectivity work does.
        assert self._copy is not None
        count = next(iter(states.values())).shape[0]
        targets = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        for name, value in constants.items():  # the same for every point
            if name in targets:
                targets[name].copy_(value)
        moving = [(targets[k], v) for k, v in states.items() if k in targets]

        def part(run: Evaluation, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
            loss, outputs = run.forward(batch.data, batch.weight)
            loss, correct, units = _loss_and_correct(self.objective, loss, outputs, batch.data)
            return batch.weight * loss.double(), correct, units

        losses, accuracies = [], []
        for i in range(count):
            for target, values in moving:
                target.copy_(values[i])
            if self.bn == "recompute":
                self._recompute_statistics()
            loss, accuracy = self._totals(self._copy, part)
            losses.append(loss)
            accuracies.append(accuracy)
        return torch.stack(losses).cpu(), torch.stack(accuracies).cpu()

    def _recompute_statistics(self) -> None:
        for m in self.batchnorms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for batch in self.problem.batches():
            self.objective.loss(self.module, batch.data, batch.weight)
        for m in self.batchnorms:
            m.eval()


# -- the grid -----------------------------------------------------------------------------------
@dataclass
class _Grid:
    """What a surface computation is: origin, directions, coordinates, and the results store."""

    origin: dict[str, Tensor]
    directions: list[dict[str, Tensor]]
    coords: tuple[np.ndarray, ...]
    buffer_origin: dict[str, Tensor]
    buffer_directions: list[dict[str, Tensor]]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(c.size for c in self.coords)

    def points(self) -> np.ndarray:
        mesh = np.meshgrid(*self.coords, indexing="ij")
        return np.stack([m.reshape(-1) for m in mesh], axis=1)

    def states(self, C: np.ndarray) -> dict[str, Tensor]:
        # Stacked parameters (and varying buffers) of the points with coordinates ``C``.
        out = {}
        for table, dirs in (
            (self.origin, self.directions),
            (self.buffer_origin, self.buffer_directions),
        ):
            for name, base in table.items():
                coefficients = torch.as_tensor(C, dtype=torch.float64).to(base.device)
                value = base.unsqueeze(0).expand(len(C), *base.shape).clone()
                for a, d in enumerate(dirs):
                    if name in d:
                        step = coefficients[:, a].to(base.dtype).reshape(-1, *([1] * base.ndim))
                        value = value + step * d[name]  # + 0.0 * d is exact: the origin is exact
                if name.endswith("running_var"):
                    value = value.clamp_min(0.0)  # extrapolated variances stay valid
                out[name] = value
        return out


# -- results file ---------------------------------------------------------------------------------
def _row_segments(flat_index: np.ndarray, shape: tuple[int, ...]) -> list[tuple[Any, slice]]:
    # Split sorted contiguous flat indices into (dataset selection, slice of values) pairs.
    first, count = int(flat_index[0]), len(flat_index)
    if len(shape) == 1:
        return [(np.s_[first : first + count], slice(0, count))]
    width = shape[1]
    out, offset = [], 0
    while offset < count:
        row, column = divmod(first + offset, width)
        length = min(width - column, count - offset)
        out.append((np.s_[row, column : column + length], slice(offset, offset + length)))
        offset += length
    return out


class _Store:
    """HDF5 results file, filled chunk by chunk with flushes.

    The file is created atomically when the first chunk is written, so a call that fails
    before computing anything leaves no file.

    Layout: attributes ``format``, ``settings`` (JSON), ``model_fingerprint``,
    ``data_fingerprint``; datasets ``coords/<axis>``, ``loss`` and ``accuracy`` (NaN where
    not computed yet, or undefined), ``computed`` (a 0/1 mask, written after the values of
    a chunk so that a kill between the two only costs recomputing that chunk) and
    ``directions/<i>/<parameter name>``.
    """

    def __init__(self, path: str, grid: _Grid, identity: dict[str, str], resume: bool) -> None:
        import h5py

        self.path = check_writable(path, "surface file")
        self.h5py = h5py
        # A new file is created with the first computed chunk, so a run that fails before
        # computing anything (a bad loss, an interrupt) leaves no file behind, and with
        # resume=False the previous file stays intact until there is something to replace it.
        self._pending: tuple[_Grid, dict[str, str]] | None = None
        if os.path.exists(self.path) and resume:
            self._check(identity)
        else:
            self._pending = (grid, identity)

    def _ensure_created(self) -> None:
        if self._pending is not None:
            self._create(*self._pending)
            self._pending = None

    def _create(self, grid: _Grid, identity: dict[str, str]) -> None:
        temporary = self.path + ".tmp"
        try:
            with self.h5py.File(temporary, "w") as f:
                f.attrs["format"] = _FORMAT
                for key, value in identity.items():
                    f.attrs[key] = value
                for i, c in enumerate(grid.coords):
                    f.create_dataset(f"coords/{i}", data=c)
                for name in ("loss", "accuracy"):
                    f.create_dataset(name, data=np.full(grid.shape, np.nan))
                f.create_dataset("computed", data=np.zeros(grid.shape, dtype=np.uint8))
                for i, d in enumerate(grid.directions):
                    for name, t in d.items():
                        f.create_dataset(f"directions/{i}/{name}", data=t.detach().cpu().numpy())
            os.replace(temporary, self.path)  # atomic: the file is either absent or complete
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise

    def _check(self, identity: dict[str, str]) -> None:
        try:
            f = self.h5py.File(self.path, "r")
        except OSError as error:
            raise ValueError(
                f"cannot resume from {self.path!r}: not a readable HDF5 file ({error}). Delete "
                "it or pass resume=False to start over."
            ) from error
        with f:
            if f.attrs.get("format") != _FORMAT:
                raise ValueError(
                    f"{self.path!r} is not a landscape surface file; refusing to overwrite."
                )
            differing = [k for k, v in identity.items() if f.attrs.get(k) != v]
        if differing:
            raise ValueError(
                f"{self.path!r} was made with different {', '.join(differing)}; refusing to resume "
                "into it. Use another path, or resume=False to overwrite."
            )

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._pending is not None:  # nothing stored yet
            shape = self._pending[0].shape
            nothing = np.zeros(shape, dtype=bool)
            return np.full(shape, np.nan), np.full(shape, np.nan), nothing
        with self.h5py.File(self.path, "r") as f:
            return f["loss"][...], f["accuracy"][...], f["computed"][...].astype(bool)

    def write(self, flat_index: np.ndarray, loss: np.ndarray, accuracy: np.ndarray) -> None:
        # A chunk is a contiguous run of flat indices: write it row segment by row segment,
        # values first, then the mask.
        self._ensure_created()
        with self.h5py.File(self.path, "r+") as f:
            shape = f["loss"].shape
            segments = _row_segments(flat_index, shape)
            for name, values in (("loss", loss), ("accuracy", accuracy)):
                for where, part in segments:
                    f[name][where] = values[part]
            f.flush()
            for where, part in segments:
                f["computed"][where] = np.ones(part.stop - part.start, dtype=np.uint8)
            f.flush()

    def set_origin(self, loss: float, accuracy: float) -> None:
        self._ensure_created()
        with self.h5py.File(self.path, "r+") as f:
            f.attrs["origin_loss"] = loss
            f.attrs["origin_accuracy"] = accuracy


# -- the public function --------------------------------------------------------------------------
def _as_direction_list(directions: Any) -> list[dict[str, Tensor]]:
    if isinstance(directions, Mapping):
        return [dict(directions)]
    out = [dict(d) for d in directions]
    if not 1 <= len(out) <= 2:
        raise ValueError(f"a surface needs 1 or 2 directions; got {len(out)}.")
    return out


def surface(
    problem: Problem | nn.Module,
    data: Any = None,
    loss_fn: Criterion | None = None,
    directions: Mapping[str, Tensor] | Sequence[Mapping[str, Tensor]] | None = None,
    coords: Any = None,
    *,
    metrics: Sequence[str] = _METRICS,
    path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    bn: BNPolicy = "eval",
    points_per_chunk: int | None = None,
    vectorize: bool | None = None,
    progress: bool = True,
    **options: Any,
) -> Surface:
    r"""Evaluate the loss (and accuracy) on a 1-D or 2-D grid of perturbed parameters.

    .. math::
        L(c_1, c_2) = \frac{\sum_b w_b L_b(\theta_0 + c_1 d_1 + c_2 d_2)}{\sum_b w_b}

    (batches weighted by their samples, or scored tokens; see :mod:`landscape.losses`).

    The model itself is never modified: points are evaluated on a private copy, or with
    ``torch.func.functional_call`` on stacked parameters, ``points_per_chunk`` points at a
    time under ``vmap`` in one pass over the (device-cached) data (see ``vectorize``).
    Coordinates within ``1e-12`` of zero are snapped to 0 and those points use
    :math:`\theta_0` exactly.

    **BatchNorm** (``bn``): ``"eval"`` (default) keeps the model's running statistics
    fixed at every point — the model as deployed, so the origin equals its plain eval loss,
    as in Li et al.; minima then look sharper than with ``"recompute"``, which re-estimates
    the running statistics on the data at each point (what mode-connectivity work does; two
    extra passes per point, no vectorization); ``"batch"`` normalizes every batch by its own
    statistics. On a small BN model frozen statistics made a minimum look about 8x sharper
    than recomputed ones: choose knowingly.

    **Files and resuming.** With ``path``, results go to an HDF5 file (see
    :class:`_Store` for the layout) as they are computed. Re-running the same call after an
    interruption (even SIGKILL) computes only the missing chunks and gives bitwise the
    uninterrupted result; a file made with other settings, model, directions or data is
    refused. The file appears with the first computed chunk: a call that fails before that
    (a bad loss, an interrupt) leaves no file, and with ``resume=False`` the previous file
    until then.

    **Distributed.** Under :mod:`torch.distributed`, chunks of grid points are shared out
    across ranks (each rank uses all the data); every rank returns the full surface and
    rank 0 writes the file.

    Parameters
    ----------
    problem, data, loss_fn : optional
        A :class:`~landscape.problem.Problem`, or the model at the center
        :math:`\theta_0` with its data and loss, as for :func:`landscape.hessian`. The
        surface moves the problem's selected parameters (default: all trainable ones)
        around their values; for another center, pass ``problem.at(theta)``.
    directions : dict or list of 1-2 dicts
        Directions ``{name: tensor}`` (e.g. :func:`random_directions`); names absent from a
        direction do not move along it.
    coords : array or tuple of arrays, optional
        Coordinates along every axis (one array), or one array per axis. Default
        ``np.linspace(-1, 1, 51)``.
    metrics : sequence of {"loss", "accuracy"}, optional
        Accuracy (argmax for integer class targets; next-token accuracy over scored tokens
        for a causal language model) is reported where defined.
    path : str or PathLike, optional
        HDF5 file to write (and resume from).
    resume : bool, optional
        Continue a matching existing file (default) or overwrite it.
    bn : {"eval", "recompute", "batch"}, optional
        BatchNorm policy (see above).
    points_per_chunk : int, optional
        Points vectorized together (memory ~ chunk x parameters + chunk x activations);
        default up to 32.
    vectorize : bool, optional
        Evaluate the points of a chunk together with ``vmap(functional_call)`` (default on
        CUDA, where one kernel serves many points), or one after another by writing their
        weights into a private copy of the model (default on CPU, where one large matrix
        product beats many small batched ones). Results agree to rounding.
    progress : bool, optional
        Show a tqdm progress bar with points per second.
    **options
        Options of :class:`~landscape.problem.Problem` (``batch_loss``, ``count``,
        ``params``, ``max_batches``, ``max_samples``, ``cache``).

    Returns
    -------
    Surface
        Coordinates, loss and accuracy grids, origin values.

    Raises
    ------
    TypeError
        For directions given in the place of ``loss_fn`` (the 0.1 positional order).
    ValueError
        For bad options, directions whose shapes do not match the model, or a results file
        made with different settings.
    OSError
        If ``path`` cannot be written: ``FileNotFoundError`` for a directory that does not
        exist, ``IsADirectoryError`` for a directory (under :mod:`torch.distributed`, a
        ``ValueError`` with the same message on every rank).

    References
    ----------
    H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the loss landscape of
    neural nets", NeurIPS 2018, arXiv:1712.09913.

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> X, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    >>> dirs = ls.random_directions(model, n=1)
    >>> s = surface(model, (X, y), directions=dirs, coords=[-1, 0, 1], progress=False)
    >>> s.loss.shape, float(s.loss[1]) == s.origin_loss
    ((3,), True)
    """
    if isinstance(loss_fn, Mapping) or (
        isinstance(loss_fn, Sequence) and loss_fn and isinstance(loss_fn[0], Mapping)
    ):
        raise TypeError(
            "surface(model, data, directions, coords) is now spelled surface(model, data, "
            "directions=..., coords=...) (landscape 0.2): loss_fn is the third argument of "
            "every function."
        )
    if directions is None:
        raise TypeError("surface() needs directions=... (e.g. ls.random_directions(model)).")
    if isinstance(problem, nn.Module) and not any(p.requires_grad for p in problem.parameters()):
        raise ValueError(f"{type(problem).__name__} has no trainable parameters to move along.")
    problem = as_problem(problem, data, loss_fn, where="surface", **options)
    return evaluate_grid(
        problem,
        directions,
        coords,
        GridOptions(metrics, bn, points_per_chunk, vectorize),
        path=path,
        resume=resume,
        progress=progress,
    )


@dataclass(frozen=True)
class GridOptions:
    """How :func:`evaluate_grid` evaluates: metrics, BatchNorm policy, chunks, moving buffers.

    ``buffer_origin`` and ``buffer_directions`` are buffers that move with the coordinates
    (:func:`landscape.interpolate` moves BatchNorm statistics between two models);
    ``description`` is stored in the settings (how the directions were made).
    """

    metrics: Sequence[str] = _METRICS
    bn: BNPolicy = "eval"
    points_per_chunk: int | None = None
    vectorize: bool | None = None
    buffer_origin: Mapping[str, Tensor] | None = None
    buffer_directions: Sequence[Mapping[str, Tensor]] | None = None
    description: str = ""


def _checked_grid(problem: Problem, directions: Any, coords: Any, options: GridOptions) -> _Grid:
    """Return the grid: center, directions checked against it, snapped coordinates, buffers.

    Returns
    -------
    _Grid
        The grid.

    Raises
    ------
    ValueError
        For a bad ``bn`` or ``metrics``, directions that do not fit the parameters, or
        coordinate arrays that do not match the directions.
    """
    if options.bn not in ("eval", "recompute", "batch"):
        raise ValueError(f"bn must be 'eval', 'recompute' or 'batch'; got {options.bn!r}.")
    unknown = set(options.metrics) - set(_METRICS)
    if unknown or "loss" not in options.metrics:
        raise ValueError(
            f"metrics must include 'loss' and come from {_METRICS}; got {tuple(options.metrics)}."
        )
    dirs = _as_direction_list(directions)
    base = dict(problem.theta)
    for i, d in enumerate(dirs):
        # Entries for names that do not move (frozen parameters in a PCA of state dicts)
        # are dropped when they are zero; anything else is an error.
        for k in [k for k in d if k not in base and not bool(torch.count_nonzero(d[k]))]:
            del d[k]
        extra = [k for k in d if k not in base]
        if extra:
            raise ValueError(
                f"direction {i} has entries {extra[:5]} that are not trainable parameters."
            )
        for k, t in d.items():
            if t.shape != base[k].shape:
                raise ValueError(
                    f"direction {i} entry {k!r} has shape {tuple(t.shape)}; the parameter has "
                    f"{tuple(base[k].shape)}."
                )
    if coords is None:
        coords = np.linspace(-1.0, 1.0, 51)
    if isinstance(coords, tuple):
        axes = tuple(_snap(c) for c in coords)
        if len(axes) != len(dirs):
            raise ValueError(f"got {len(axes)} coordinate arrays for {len(dirs)} directions.")
    else:
        axes = tuple(_snap(coords) for _ in dirs)
    device = next(iter(base.values())).device
    return _Grid(
        origin=base,
        directions=[
            {k: t.to(device=device, dtype=base[k].dtype) for k, t in d.items()} for d in dirs
        ],
        coords=axes,
        buffer_origin={k: v.detach() for k, v in (options.buffer_origin or {}).items()},
        buffer_directions=[dict(d) for d in (options.buffer_directions or [])],
    )


def _chunk_size(grid: _Grid, points_per_chunk: int | None) -> int:
    if points_per_chunk is not None and (
        not isinstance(points_per_chunk, int) or points_per_chunk < 1
    ):
        raise ValueError(f"points_per_chunk must be a positive integer; got {points_per_chunk!r}.")
    first = next(iter(grid.origin.values()))
    P = sum(t.numel() for t in grid.origin.values())
    return points_per_chunk or int(max(1, min(32, 2**28 // max(1, P * first.element_size()))))


def _identity(
    problem: Problem, grid: _Grid, constants: dict[str, Tensor], settings: dict[str, Any]
) -> dict[str, str]:
    """Return what a results file must match to be resumed: settings, model, directions, data.

    Returns
    -------
    dict of str to str
        ``settings`` (JSON), ``model_fingerprint`` and ``data_fingerprint``.
    """
    return {
        "settings": json.dumps(settings, sort_keys=True),
        "model_fingerprint": fingerprint(
            {
                **{f"origin/{k}": v for k, v in grid.origin.items()},
                **{f"const/{k}": v for k, v in constants.items()},
                **{f"dir{i}/{k}": v for i, d in enumerate(grid.directions) for k, v in d.items()},
                **{f"buffer/{k}": v for k, v in grid.buffer_origin.items()},
            }
        ),
        "data_fingerprint": _data_fingerprint(problem.source),
    }


def _stored(
    path: Any, grid: _Grid, identity: dict[str, str], resume: bool
) -> tuple[_Store | None, np.ndarray, np.ndarray, np.ndarray]:
    """Open the results file on rank 0 and share what it holds with every rank.

    Returns
    -------
    tuple
        The store (rank 0 with a path, else ``None``) and the flat loss, accuracy and done
        arrays.

    Raises
    ------
    ValueError
        If rank 0 refused the file (on every rank under :mod:`torch.distributed`).
    OSError
        If the path cannot be written (one process).
    """
    n = int(np.prod(grid.shape))
    store = None
    loss_flat, acc_flat, done = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool)
    failure: str | None = None
    if path is not None and distributed.rank() == 0:
        try:
            store = _Store(os.fspath(path), grid, identity, resume)
            stored_loss, stored_acc, stored_done = store.read()
            loss_flat, acc_flat = stored_loss.reshape(-1), stored_acc.reshape(-1)
            done = stored_done.reshape(-1)
        except (ValueError, OSError) as error:  # a refused file, or a path that cannot be written
            if not distributed.is_distributed():
                raise
            failure = str(error)
    if distributed.is_distributed():
        import torch.distributed as dist

        # Every rank learns rank 0's outcome, so a refused file raises everywhere instead
        # of leaving the other ranks waiting in a collective.
        shared = [loss_flat, acc_flat, done, failure]
        dist.broadcast_object_list(shared, src=0)
        loss_flat, acc_flat, done, failure = shared
        if failure is not None:
            raise ValueError(failure)
    return store, loss_flat, acc_flat, done


def _evaluate_chunks(
    evaluate: Any,
    grid: _Grid,
    chunk: int,
    state: tuple[np.ndarray, np.ndarray, np.ndarray],
    store: _Store | None,
    progress: bool,
) -> int:
    """Evaluate the chunks not done yet, shared out across ranks; return the points computed.

    Returns
    -------
    int
        Points computed by this call (all ranks).
    """
    loss_flat, acc_flat, done = state
    points = grid.points()
    rank, world = distributed.rank(), distributed.world_size()
    chunks = [np.arange(i, min(i + chunk, len(points))) for i in range(0, len(points), chunk)]
    todo = [c for c in chunks if not done[c].all()]
    device = next(iter(grid.origin.values())).device
    bar = None
    if progress and rank == 0 and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(c) for c in todo), desc="loss surface", unit="pt", leave=False)
    computed = 0
    try:
        for first in range(0, len(todo), world):
            mine = todo[first + rank] if first + rank < len(todo) else None
            results = torch.zeros(world, chunk, 2, dtype=torch.float64)
            if mine is not None:
                loss, acc = evaluate(grid.states(points[mine]))
                results[rank, : len(mine), 0] = loss
                results[rank, : len(mine), 1] = acc
            if distributed.is_distributed():
                results = distributed.all_reduce_sum_(results.to(device)).cpu()
            for r in range(world):
                if first + r >= len(todo):
                    continue
                idx = todo[first + r]
                loss_flat[idx] = results[r, : len(idx), 0].numpy()
                acc_flat[idx] = results[r, : len(idx), 1].numpy()
                done[idx] = True
                if store is not None:
                    store.write(idx, loss_flat[idx], acc_flat[idx])
                computed += len(idx)
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return computed


def evaluate_grid(
    problem: Problem,
    directions: Any,
    coords: Any,
    options: GridOptions,
    *,
    path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Surface:
    """Evaluate a problem's loss on a grid: the engine of :func:`surface` and the paths.

    Parameters
    ----------
    problem : Problem
        What is evaluated.
    directions, coords : Any
        As for :func:`surface`.
    options : GridOptions
        Metrics, BatchNorm policy, chunking, center and moving buffers.
    path, resume, progress : optional
        As for :func:`surface`.

    Returns
    -------
    Surface
        The surface.
    """
    start_time = time.perf_counter()
    grid = _checked_grid(problem, directions, coords, options)
    model = problem.model
    constants = {n: p.detach() for n, p in model.named_parameters() if n not in grid.origin}
    constants.update(
        {n: b.detach().clone() for n, b in model.named_buffers() if n not in grid.buffer_origin}
    )
    device = next(iter(grid.origin.values())).device
    vectorize = device.type != "cpu" if options.vectorize is None else options.vectorize
    bn = options.bn
    # The loss as the model computes it, in its own dtype; every rank uses all the data.
    problem = problem.with_evaluation(
        mode="train" if bn == "batch" and vectorize else "eval", precision="model"
    ).with_data(shard=False)
    chunk = _chunk_size(grid, options.points_per_chunk)
    objective, source = problem.objective, problem.source
    settings = {
        "bn": bn,
        "metrics": list(options.metrics),
        "coords": [a.tolist() for a in grid.coords],
        "points_per_chunk": chunk,
        "vectorize": bool(vectorize),
        "loss": describe(
            objective.loss_fn if objective.loss_fn is not None else objective.batch_loss
        ),
        **({"count": describe(objective.count)} if objective.count is not None else {}),
        "description": options.description,
        "max_batches": source.max_batches,
        "max_samples": source.max_samples,
    }
    store, *state = _stored(path, grid, _identity(problem, grid, constants, settings), resume)
    loss_flat, acc_flat, _ = state
    evaluator = _Evaluator(problem, bn, vectorize)

    def evaluate(states: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return evaluator(states, constants)

    computed = _evaluate_chunks(evaluate, grid, chunk, tuple(state), store, progress)
    points = grid.points()
    at_origin = np.flatnonzero(np.all(points == 0.0, axis=1))
    if at_origin.size:
        origin_loss, origin_acc = float(loss_flat[at_origin[0]]), float(acc_flat[at_origin[0]])
    else:
        loss, acc = evaluate(grid.states(np.zeros((1, len(grid.directions)))))
        origin_loss, origin_acc = float(loss[0]), float(acc[0])
    if store is not None:
        store.set_origin(origin_loss, origin_acc)
    accuracy = acc_flat.reshape(grid.shape)
    has_accuracy = "accuracy" in options.metrics and not np.all(np.isnan(accuracy))
    return Surface(
        coords=grid.coords,
        loss=loss_flat.reshape(grid.shape),
        accuracy=accuracy if has_accuracy else None,
        origin_loss=origin_loss,
        origin_accuracy=origin_acc if has_accuracy else None,
        settings=settings,
        num_points=computed,
        seconds=time.perf_counter() - start_time,
        path=os.fspath(path) if path is not None else None,
    )
