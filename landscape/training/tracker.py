r"""Track sharpness against the optimizer's stability threshold during training (Edge of Stability).

Full-batch gradient descent with step size :math:`\eta` shows *progressive sharpening*: the top
Hessian eigenvalue :math:`S_t = \lambda_{\max}(H_t)` of the training loss rises until it reaches
the linear-stability threshold :math:`2/\eta`, and then hovers there — the *Edge of Stability*
(Cohen et al. 2021). With momentum the threshold is :math:`(2+2\beta)/\eta`; for Adam it is
:math:`(2+2\beta_1)/((1-\beta_1)\eta)` and applies to the *preconditioned* sharpness
:math:`\lambda_{\max}(P_t^{-1} H_t)` (Cohen et al. 2022). Training becomes unstable when
:math:`R_t = \eta_t S_t / c` stays above one (Gilmer et al. 2022); for mini-batch SGD the
quantity that settles at :math:`2/\eta` is the *batch sharpness*
:math:`\mathbb{E}_S[g_S^\top H_S g_S / g_S^\top g_S]` (Andreyev & Beneventano 2024).

Every optimizer gets a ratio, labelled with what it rests on (``history["measure"]`` and
``history["preconditioner"]``): optimizers whose step is linear once their state is frozen
(SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam, SparseAdam, ASGD,
Adafactor's linear part) compare :math:`\lambda_{\max}(P^{-1}(H+W))`, with :math:`P` of the
optimizer's next step read from its state, to their own threshold
(:func:`landscape.linearize`); the others (Muon, Rprop, L-BFGS, Lion-like and unknown ones)
compare the critical sharpness along their own next update (:func:`landscape.critical_sharpness`)
to :math:`2/\eta` — a ratio above one says the next step raises the loss, not that training
diverges.

:class:`SharpnessTracker` measures these every few steps of any training loop, warm-starting
Lanczos from the previous top eigenvector so that a measurement costs a handful of
Hessian-vector products once the eigenvector moves slowly. It never disturbs training: the
model (parameters, buffers, ``.grad``, ``requires_grad``, train/eval flags), the optimizer and
the global random number generators (torch CPU and CUDA, numpy, :mod:`random`) are exactly as
before after every call.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import distributed
from landscape.data import Batch
from landscape.linalg.eigen import eigenvalues
from landscape.linalg.trace import hutchinson_trace
from landscape.losses import Criterion
from landscape.metrics.optimizers import (
    FrozenLinearization,
    MissingOptimizerState,
    NotLinearizable,
    critical_sharpness,
    linearize,
    preconditioned_operator,
)
from landscape.metrics.optimizers.frozen import settings_linearization
from landscape.metrics.optimizers.instances import optimizer_list
from landscape.metrics.thresholds import OptimizerSettings, optimizer_settings
from landscape.operators.base import LinearOperator
from landscape.operators.hessian import HessianOperator, hessian
from landscape.problem import Problem, as_problem

__all__ = ["SharpnessTracker"]

#: Per-measurement scalar fields of :attr:`SharpnessTracker.history`, in order.
FIELDS = (
    "step",
    "lr",
    "threshold",
    "sharpness",
    "preconditioned_sharpness",
    "critical_sharpness",
    "ratio",
    "batch_sharpness",
    "batch_sharpness_ratio",
    "trace",
    "trace_stderr",
    "train_loss",
    "loss",
    "weight_decay",
    "num_matvecs",
    "num_matvecs_sharpness",
    "converged",
)
_DEFAULT_TRACE_PROBES = 30
_NEEDS_STATE = (
    "preconditioned=True needs an adaptive optimizer instance with a linear frozen step "
    "(Adam, AdamW, RMSprop, Adagrad, ...) whose state holds the preconditioner;"
)


class SharpnessTracker:
    r"""Measure sharpness against the stability threshold every ``every`` steps of training.

    Call :meth:`step` once after every optimizer step. Every ``every``-th call it measures, on
    ``data`` at the current parameters:

    * ``sharpness`` :math:`S = \lambda_{\max}(H)` of the mean loss over ``data`` (Lanczos,
      warm-started from the previous top eigenvector: REFERENCES §7);
    * ``threshold`` :math:`c/\eta`, with :math:`c` the coefficient of the optimizer's frozen
      recursion (:func:`landscape.linearize`: :math:`2`, :math:`2+2\beta`, Adam's
      :math:`(2+2\beta_1)/(1-\beta_1)`, NAdam's at its step, lowered by decoupled decay) and
      :math:`\eta` the optimizer's *current* learning rate, read from ``param_groups`` at every
      measurement so that it follows learning-rate schedules; :math:`2/\eta` for the
      critical sharpness;
    * for adaptive optimizers, ``preconditioned_sharpness``
      :math:`\lambda_{\max}(P^{-1/2} (H+W) P^{-1/2}) = \lambda_{\max}(P^{-1}(H+W))` with
      :math:`P` the diagonal the optimizer's *next* step divides by, read from its state
      (Cohen et al. 2022 use the last step's, which differs by one bias correction); the
      threshold applies to this quantity;
    * for optimizers without a linear frozen step, ``critical_sharpness``
      :math:`\lambda_c = 2/\eta_c` along the optimizer's own next update on ``data``;
    * ``ratio`` :math:`R = S_{\text{eff}} / (c/\eta)`, with :math:`S_{\text{eff}}` the
      preconditioned sharpness, the critical sharpness, or :math:`S + w` for the SGD family
      (:math:`w` the coupled weight decay, which adds :math:`wI` to the Hessian the optimizer
      sees); ``measure`` and ``preconditioner`` say which;
    * optionally the Hutchinson trace with its standard error, and the batch sharpness
      :math:`\mathbb{E}_S[g_S^\top H_S g_S / g_S^\top g_S]` over batches of ``data``;
    * the training loss passed to :meth:`step`, the loss on ``data``, and the number of
      Hessian-vector products spent.

    Parameters
    ----------
    problem : Problem or torch.nn.Module
        A :class:`~landscape.problem.Problem`, or the model being trained (never modified)
        with ``data`` and ``loss_fn``.
    data : iterable of batches, or one batch, optional
        The data the sharpness is measured on (a ``DataLoader``, a list of batches, or one
        batch): the full training set for full-batch GD, or a fixed large subset. Batches are
        kept on the device between measurements when they fit (see
        :class:`~landscape.data.DataSource`). For ``batch_sharpness``, batch it at the training
        batch size.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets) -> mean loss``, the *same* mean-reduced loss the optimizer
        minimizes (a sum-reduced loss would scale the sharpness by the batch size).
    every : int, optional
        Measure when the step number is a multiple of ``every``.
    k : int, optional
        Number of top Hessian eigenvalues (``history["eigenvalues"]`` has ``k`` columns; the
        preconditioned sharpness is always the top one).
    trace : bool or int, optional
        Also estimate :math:`\operatorname{tr} H` by Hutchinson's estimator with this many
        probes (``True``: 30).
    preconditioned : {"auto"} or bool, optional
        Measure the preconditioned sharpness of adaptive optimizers: ``"auto"`` (default)
        whenever the optimizer has a preconditioner in its state, ``True`` to require it (an
        error for other optimizers), ``False`` never (then their ``ratio`` is ``nan``, as it
        is for a *named* ``"adam"`` and for an optimizer that has not stepped yet, which have
        no state to read the preconditioner from).
    batch_sharpness : bool or int, optional
        Also measure the batch sharpness: over every batch of ``data`` (``True``) or over this
        many batches drawn at random (with the tracker's own generator). Costs one gradient
        and one Hessian-vector product per batch.
    tol : float, optional
        Relative residual tolerance of Lanczos (:func:`~landscape.linalg.eigen.eigenvalues`);
        the eigenvalue error is at most about ``tol**2 * ||H||**2 / gap``.
    max_matvecs : int, optional
        Budget of Hessian-vector products per eigenvalue computation. Measurements that do
        not converge within it are flagged in ``history["converged"]`` (and warned about once).
    seed : int, optional
        Seed of the tracker's private generator (random starts, trace probes, batch choice).
    backend : str, optional
        How Hessian products are computed (see :class:`~landscape.HessianOperator`).
    **options
        Options of :class:`~landscape.problem.Problem`: ``params`` (the Hessian block of a
        parameter subset), ``batch_loss``, ``count``, ``mode`` (which function's Hessian is
        measured), ``max_batches``, ``max_samples``, ``cache``, ``shard``.

    Attributes
    ----------
    operator : HessianOperator
        The Hessian of the mean loss over ``data`` (products use the current parameters).
    num_calls : int
        Number of :meth:`step` calls so far.

    Raises
    ------
    ValueError
        For a non-positive ``every``, ``k``, ``tol``, ``max_matvecs`` or number of probes or
        batches, ``k`` above the number of parameters, or an unknown ``preconditioned``.

    References
    ----------
    J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar (ICLR 2021), "Gradient Descent on
    Neural Networks Typically Occurs at the Edge of Stability". J. Cohen et al. (2022),
    "Adaptive Gradient Methods at the Edge of Stability". J. Gilmer et al. (ICLR 2022), "A Loss
    Curvature Perspective on Training Instability in Deep Learning". A. Andreyev,
    P. Beneventano (2024), "Edge of Stochastic Stability", arXiv:2412.20553.

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> X, Y = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    >>> model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> tracker = SharpnessTracker(model, (X, Y), nn.MSELoss(), every=5)
    >>> for _ in range(20):
    ...     loss = nn.functional.mse_loss(model(X), Y)
    ...     loss.backward(); optimizer.step(); optimizer.zero_grad()
    ...     _ = tracker.step(optimizer, loss=loss)
    >>> tracker.history["step"].tolist()
    [5, 10, 15, 20]
    >>> tracker.history["threshold"].round(6).tolist()
    [20.0, 20.0, 20.0, 20.0]
    >>> bool((tracker.history["ratio"] < 1).all())
    True
    """

    def __init__(
        self,
        problem: Problem | nn.Module,
        data: Any = None,
        loss_fn: Criterion | None = None,
        *,
        every: int = 10,
        k: int = 1,
        trace: bool | int = False,
        preconditioned: bool | str = "auto",
        batch_sharpness: bool | int = False,
        tol: float = 1e-3,
        max_matvecs: int = 300,
        seed: int = 0,
        backend: str = "auto",
        **options: Any,
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer; got {every!r}.")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        if not tol > 0:
            raise ValueError(f"tol must be positive; got {tol!r}.")
        if not isinstance(max_matvecs, int) or max_matvecs < 1:
            raise ValueError(f"max_matvecs must be a positive integer; got {max_matvecs!r}.")
        if preconditioned not in ("auto", True, False):
            raise ValueError(
                f"preconditioned must be 'auto', True or False; got {preconditioned!r}."
            )
        problem = as_problem(problem, data, loss_fn, where="SharpnessTracker", **options)
        self.model = problem.model
        self.every = every
        self.k = k
        self.trace_probes = _count_option(trace, "trace", _DEFAULT_TRACE_PROBES)
        self.batch_count = _count_option(batch_sharpness, "batch_sharpness", -1)
        self.preconditioned = preconditioned
        self.tol = float(tol)
        self.max_matvecs = max_matvecs
        self.seed = seed
        self.mode = problem.mode
        self.operator: HessianOperator = hessian(problem, backend=backend)
        if k > self.operator.shape[0]:  # fail now, not at the first measurement mid-training
            raise ValueError(
                f"k={k} asks for {k} eigenvalues of a Hessian with {self.operator.shape[0]} "
                "parameters; at most that many exist."
            )
        self._generator = torch.Generator().manual_seed(seed)
        self._v0: Tensor | None = None
        self._v0_preconditioned: Tensor | None = None
        self._warned = False
        self._records: list[dict[str, Any]] = []
        self.num_calls = 0

    # -- the training-loop interface -------------------------------------------------------------
    def step(
        self,
        optimizer: torch.optim.Optimizer | str,
        *,
        loss: Tensor | float | None = None,
        step: int | None = None,
        **settings: Any,
    ) -> dict[str, Any] | None:
        """Count one optimizer step; measure if the step number is a multiple of ``every``.

        Call it after ``optimizer.step()``. Between measurements it only increments a counter
        (``loss`` is not even read, so no device synchronization happens).

        Parameters
        ----------
        optimizer : torch.optim.Optimizer or str
            The optimizer (any ``torch.optim`` class or third-party optimizer; its
            ``param_groups`` and state give the current learning rate, hyperparameters and
            preconditioner), a list of optimizers that train the model together
            (``[muon, adamw]``), or a name ``"sgd"``, ``"momentum"``,
            ``"nesterov"``, ``"adam"`` with ``lr=`` (and ``momentum=``, ``betas=``...) in
            ``settings`` for loops without a torch optimizer. Framework wrappers (Accelerate's
            ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``...) and learning-rate
            schedulers are unwrapped to the torch optimizer inside
            (:func:`~landscape.metrics.thresholds.unwrap_optimizer`).
        loss : Tensor or float, optional
            The training loss of this step, recorded as ``train_loss``.
        step : int, optional
            The step number (default: the number of calls so far, so the first call is step 1).
        **settings
            ``lr``, ``momentum``, ``betas``, ``eps``, ``weight_decay`` for a named optimizer.

        Returns
        -------
        dict or None
            The new record when a measurement was taken (see :meth:`measure`), else ``None``.
        """
        self.num_calls += 1
        current = self.num_calls if step is None else int(step)
        if current % self.every != 0:
            return None
        return self.measure(optimizer, loss=loss, step=current, **settings)

    def measure(
        self,
        optimizer: torch.optim.Optimizer | str,
        *,
        loss: Tensor | float | None = None,
        step: int | None = None,
        **settings: Any,
    ) -> dict[str, Any]:
        """Measure now, whatever the step number (e.g. at initialization, with ``step=0``).

        Parameters
        ----------
        optimizer : torch.optim.Optimizer or str
            As in :meth:`step`.
        loss : Tensor or float, optional
            The training loss, recorded as ``train_loss``.
        step : int, optional
            The step number to record (default: the number of :meth:`step` calls so far).
        **settings
            As in :meth:`step`.

        Returns
        -------
        dict
            The record: ``step``, ``lr``, ``kind``, ``threshold``, ``sharpness``,
            ``eigenvalues`` (top ``k``), ``preconditioned_sharpness``,
            ``critical_sharpness``, ``ratio``, ``measure`` (``"sharpness"``,
            ``"preconditioned sharpness"``, ``"critical sharpness"`` or ``"none"``),
            ``preconditioner`` (``"identity"``, ``"optimizer state"`` or why none),
            ``batch_sharpness``, ``batch_sharpness_ratio``, ``trace``, ``trace_stderr``,
            ``train_loss``, ``loss`` (on ``data``), ``weight_decay``, ``num_matvecs`` (all
            Hessian-vector products of this measurement), ``num_matvecs_sharpness`` (those of
            the raw sharpness) and ``converged``; ``nan`` for what was not measured.

        Raises
        ------
        ValueError
            If ``preconditioned=True`` and the optimizer has no preconditioner in its state,
            or a named optimizer has no ``lr``.
        """
        instances = [] if isinstance(optimizer, str) else optimizer_list(optimizer)
        config = self._settings(optimizer, instances, settings)
        if isinstance(loss, Tensor):
            loss = loss.detach()
        train_loss = math.nan if loss is None else float(loss)
        with _preserved_rng():
            record = self._compute()
            record.update(self._stability(instances, config, record))
        record.update(
            step=int(self.num_calls if step is None else step),
            kind=config.key,
            train_loss=train_loss,
        )
        self._records.append(record)
        return dict(record)

    # -- results ----------------------------------------------------------------------------------
    @property
    def records(self) -> list[dict[str, Any]]:
        """One dict per measurement (copies), in order; see :meth:`measure`."""
        return [dict(r) for r in self._records]

    @property
    def history(self) -> dict[str, np.ndarray]:
        """The measurements as numpy arrays, one entry per measurement.

        Keys: those of :data:`FIELDS` (float arrays, ``nan`` where not measured; ``step`` and
        ``num_matvecs*`` are integers, ``converged`` boolean), ``kind``, ``measure`` and
        ``preconditioner`` (strings) and ``eigenvalues`` (shape ``(n, k)``).
        """
        out: dict[str, np.ndarray] = {}
        for name in FIELDS:
            values = [r[name] for r in self._records]
            if name in ("step", "num_matvecs", "num_matvecs_sharpness"):
                out[name] = np.asarray(values, dtype=np.int64)
            elif name == "converged":
                out[name] = np.asarray(values, dtype=bool)
            else:
                out[name] = np.asarray(values, dtype=np.float64)
        for name in ("kind", "measure", "preconditioner"):  # "" in records made before them
            out[name] = np.asarray([r.get(name, "") for r in self._records], dtype=str)
        out["eigenvalues"] = np.asarray(
            [r["eigenvalues"] for r in self._records], dtype=np.float64
        ).reshape(len(self._records), self.k)
        return out

    def summary(
        self, *, level: float = 0.95, patience: int = 3, key: str = "ratio"
    ) -> dict[str, Any]:
        r"""Summarize the run: the Edge-of-Stability crossing, the ratio after it, an alarm.

        Parameters
        ----------
        level : float, optional
            The crossing level of the ratio (``t*`` is the first measured step with
            ratio ≥ ``level``).
        patience : int, optional
            The alarm is raised when the ratio exceeds one on at least this many consecutive
            measurements (persistent instability, Gilmer et al. 2022).
        key : {"ratio", "batch_sharpness_ratio"}, optional
            Which ratio to summarize.

        Returns
        -------
        dict
            ``num_measurements``, ``crossing_step`` (``t*``, or ``None``), ``ratio_mean`` and
            ``ratio_std`` over the measurements from ``t*`` on (``None`` before a crossing),
            ``max_ratio`` and ``max_ratio_step``, ``final_ratio``, ``longest_run_above_one``,
            ``alarm`` (bool) and ``alarm_step`` (the step at which the run above one reached
            ``patience`` measurements), ``initial_sharpness`` (the first measurement's
            effective sharpness), ``safe_lr`` (the largest stable learning rate at the first
            measurement, :math:`c/S_{\text{eff}}`), ``total_matvecs``, ``level``, ``patience``
            and ``key``.

        Raises
        ------
        ValueError
            For an unknown ``key`` or a non-positive ``patience``.
        """
        if key not in ("ratio", "batch_sharpness_ratio"):
            raise ValueError(f"key must be 'ratio' or 'batch_sharpness_ratio'; got {key!r}.")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer; got {patience!r}.")
        h = self.history
        steps, ratio = h["step"], h[key]
        finite = np.isfinite(ratio)
        out: dict[str, Any] = {
            "num_measurements": len(steps),
            "crossing_step": None,
            "ratio_mean": None,
            "ratio_std": None,
            "max_ratio": None,
            "max_ratio_step": None,
            "final_ratio": _float(ratio[-1]) if len(ratio) else None,
            "longest_run_above_one": 0,
            "alarm": False,
            "alarm_step": None,
            "initial_sharpness": None,
            "safe_lr": None,
            "total_matvecs": int(h["num_matvecs"].sum()),
            "level": level,
            "patience": patience,
            "key": key,
        }
        if not finite.any():
            return out
        best = int(np.nanargmax(np.where(finite, ratio, -np.inf)))
        out["max_ratio"], out["max_ratio_step"] = float(ratio[best]), int(steps[best])
        hits = np.flatnonzero(finite & (ratio >= level))
        if hits.size:
            first = int(hits[0])
            after = ratio[first:][finite[first:]]
            out["crossing_step"] = int(steps[first])
            out["ratio_mean"] = float(after.mean())
            out["ratio_std"] = float(after.std())
        run = longest = 0
        for i, above in enumerate(finite & (ratio > 1.0)):
            run = run + 1 if above else 0
            longest = max(longest, run)
            if run == patience and out["alarm_step"] is None:
                out["alarm_step"] = int(steps[i])
        out["longest_run_above_one"] = longest
        out["alarm"] = longest >= patience
        first = int(np.flatnonzero(finite)[0])
        lr, threshold = float(h["lr"][first]), float(h["threshold"][first])
        out["initial_sharpness"] = _float(ratio[first] * threshold)
        if ratio[first] > 0 and lr > 0:
            out["safe_lr"] = float(lr / ratio[first])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return settings, history and summary as a JSON-serializable dict (``nan`` → ``None``).

        Returns
        -------
        dict
            ``{"settings": ..., "history": {field: list}, "summary": ...}``.
        """
        history = {name: _jsonable(values.tolist()) for name, values in self.history.items()}
        settings = {
            "every": self.every,
            "k": self.k,
            "trace": self.trace_probes,
            "batch_sharpness": self.batch_count,
            "preconditioned": self.preconditioned,
            "tol": self.tol,
            "max_matvecs": self.max_matvecs,
            "seed": self.seed,
            "mode": self.mode,
            "num_parameters": self.operator.shape[0],
            "parameter_names": list(self.operator.param_names),
        }
        return {"settings": settings, "history": history, "summary": _jsonable(self.summary())}

    def plot(self, **kwargs: Any) -> Any:
        """Plot sharpness against the threshold, and the ratio, over the steps.

        Parameters
        ----------
        **kwargs
            Passed to :func:`landscape.report.training_plots.plot_sharpness_history`.

        Returns
        -------
        matplotlib.figure.Figure
            The figure.
        """
        from landscape.report.training_plots import plot_sharpness_history

        return plot_sharpness_history(self.history, **kwargs)

    # -- internals ----------------------------------------------------------------------------
    def _settings(
        self, optimizer: Any, instances: list[Any], settings: Mapping[str, Any]
    ) -> OptimizerSettings:
        if isinstance(optimizer, str):
            config = optimizer_settings(optimizer, **settings)
            if config.lr is None:
                raise ValueError(
                    f"a named optimizer ({optimizer!r}) needs its current learning rate: "
                    "tracker.step(name, lr=...)."
                )
            return config
        return optimizer_settings(instances)

    def _stability(
        self, instances: list[Any], config: OptimizerSettings, record: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Return the threshold, the effective sharpness's ratio to it, and what it rests on.

        Returns
        -------
        dict
            ``lr``, ``threshold``, ``preconditioned_sharpness``, ``critical_sharpness``,
            ``ratio``, ``batch_sharpness_ratio``, ``weight_decay``, ``measure``,
            ``preconditioner`` and the products or passes added.

        Raises
        ------
        ValueError
            If ``preconditioned=True`` and the optimizer has no preconditioner to read.
        """
        nan = math.nan
        out: dict[str, Any] = {
            "preconditioned_sharpness": nan, "critical_sharpness": nan,
            "batch_sharpness_ratio": nan, "weight_decay": config.weight_decay,
        }  # fmt: skip
        if not instances:  # a named optimizer: no state, so no preconditioner
            if self.preconditioned is True:
                raise ValueError(_NEEDS_STATE + f" got the name {config.kind!r}.")
            if config.kind == "adam":
                lr = float(config.lr)  # type: ignore[arg-type]
                threshold = config.coefficient / lr if lr > 0 else math.inf
                none = "none (no optimizer state)"
                return {**out, "lr": lr, "threshold": threshold, "ratio": math.nan,
                        "measure": "none", "preconditioner": none}  # fmt: skip
            lin = settings_linearization(config, self._space)
            return {**out, **self._frozen(lin, config.lr, record, "identity")}
        lin, why = _linearization(instances, self.operator.problem)
        if lin is not None:
            label = "identity" if lin.preconditioner is None else "optimizer state"
            if self.preconditioned is True and lin.preconditioner is None:
                raise ValueError(_NEEDS_STATE + f" got {config.key}.")
            return {**out, **self._frozen(lin, lin.lr, record, label)}
        if why == "no state":
            if self.preconditioned is True and config.kind != "adam":
                raise ValueError(_NEEDS_STATE + f" got {config.key}.")
            lr = float(config.lr or nan)
            return {**out, "lr": lr, "threshold": nan, "ratio": nan, "measure": "none",
                    "preconditioner": "none (no optimizer state yet)"}  # fmt: skip
        if self.preconditioned is True:
            raise ValueError(_NEEDS_STATE + f" got {config.key} ({why}).")
        return {**out, **self._critical(instances)}

    def _frozen(
        self,
        lin: FrozenLinearization,
        lr: float | None,
        record: Mapping[str, Any],
        label: str,
    ) -> dict[str, Any]:
        """Return the frozen-state threshold and ratio (``nan`` for Adam without a state).

        Returns
        -------
        dict
            The stability fields of the record.
        """
        lr = math.nan if lr is None else float(lr)
        threshold = lin.stable_sharpness
        if lin.preconditioner is not None and not self.preconditioned:
            return {"lr": lr, "threshold": threshold, "ratio": math.nan,
                    "measure": "none", "preconditioner": "none (preconditioned=False)"}  # fmt: skip
        out: dict[str, Any] = {"lr": lr, "threshold": threshold, "preconditioner": label}
        w = lin.weight_decay
        uniform = w is None or bool((w == w.reshape(-1)[0]).all())
        if lin.preconditioner is None and not lin.maximize and uniform:
            shift = 0.0 if w is None else float(w.reshape(-1)[0])
            effective = record["sharpness"] + shift  # lambda_max(H + w I), no further solve
            out["measure"] = "sharpness"
            if not math.isnan(record["batch_sharpness"]):
                out["batch_sharpness_ratio"] = (record["batch_sharpness"] + shift) / threshold
        else:
            A = preconditioned_operator(self.operator, lin)
            pre = self._top(A, 1, self._v0_preconditioned)
            self._v0_preconditioned = pre.vectors[:, 0]
            effective = float(pre.values[0])
            out.update(
                preconditioned_sharpness=effective,
                measure="preconditioned sharpness",
                num_matvecs=record["num_matvecs"] + pre.num_matvecs,
                converged=record["converged"] and pre.all_converged,
            )
        out["ratio"] = effective / threshold
        return out

    def _critical(self, instances: list[Any]) -> dict[str, Any]:
        """Return the critical sharpness along the optimizer's own update against 2/lr.

        Returns
        -------
        dict
            The stability fields of the record (``nan`` where every step raises the loss).
        """
        result = critical_sharpness(self.operator.problem, optimizer=instances)
        lr = result.lr
        threshold = 2.0 / lr if lr > 0 else math.inf
        value = result.sharpness if result.factor > 0 else math.nan
        return {
            "lr": lr, "threshold": threshold, "critical_sharpness": value,
            "ratio": value / threshold, "measure": "critical sharpness",
            "preconditioner": "optimizer state",
        }  # fmt: skip

    @property
    def _space(self) -> Any:
        return self.operator.problem.space

    def _compute(self) -> dict[str, Any]:
        op = self.operator
        nan = math.nan
        record: dict[str, Any] = {"batch_sharpness": nan, "trace": nan, "trace_stderr": nan}
        top = self._top(op, self.k, self._v0)
        self._v0 = top.vectors.sum(dim=1) if self.k > 1 else top.vectors[:, 0]
        values = top.values.double().tolist()
        hvps = top.num_matvecs
        converged = top.all_converged
        record.update(
            sharpness=values[0], eigenvalues=values, num_matvecs_sharpness=top.num_matvecs
        )
        if self.trace_probes:
            estimate = hutchinson_trace(op, self.trace_probes, seed=self._generator)
            record["trace"], record["trace_stderr"] = estimate.value, estimate.stderr
            hvps += estimate.num_matvecs
        if self.batch_count:
            record["batch_sharpness"], used = self._batch_sharpness()
            hvps += used
        record["loss"] = op.problem.loss()
        record["num_matvecs"] = hvps
        record["converged"] = converged
        return record

    def _top(self, A: LinearOperator, k: int, v0: Tensor | None) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = eigenvalues(
                A,
                k=k,
                which="largest",
                tol=self.tol,
                max_matvecs=self.max_matvecs,
                seed=self._generator,
                v0=v0,
            )
        for w in caught:
            if "did not reach tol" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not result.all_converged and not self._warned:
            self._warned = True
            warnings.warn(
                f"a sharpness measurement did not converge to tol={self.tol:g} within "
                f"max_matvecs={self.max_matvecs} Hessian-vector products; its value is a lower "
                "bound (history['converged'] flags such measurements). Raise max_matvecs or tol.",
                stacklevel=4,
            )
        return result

    def _batches(self) -> list[Batch]:
        return list(self.operator.problem.batches())

    def _batch_sharpness(self) -> tuple[float, int]:
        r"""Return the batch sharpness and the number of Hessian-vector products spent.

        Every batch's :math:`H_S g_S` is a product of the Hessian operator of that batch
        (so it gets the backend choice, the precision policy and the guard against
        ``@once_differentiable`` functions of every other product).

        Returns
        -------
        tuple of (float, int)
            The mean over batches of :math:`g_S^\top H_S g_S / g_S^\top g_S`, and the HVPs.
        """
        op = self.operator
        batches = self._batches()
        chosen = list(range(len(batches)))
        if 0 < self.batch_count < len(batches):
            order = torch.randperm(len(batches), generator=self._generator)
            chosen = sorted(order[: self.batch_count].tolist())
        total = torch.zeros(2, dtype=torch.float64, device=op.device)
        used = 0
        for i in chosen:
            one = op.problem.with_data(batches[i].data, cache=True, shard=False)
            _, g = one.value_and_grad()
            gg = g.double() @ g.double()
            if not bool(gg > 0):  # a zero gradient: no direction to measure along
                continue
            hg = hessian(one, backend=op.backend) @ g
            used += 1
            total[0] += (g.double() @ hg.double()) / gg
            total[1] += 1.0
        distributed.all_reduce_sum_(total)
        count = float(total[1])
        return (float(total[0]) / count if count else math.nan), used


# -- helpers --------------------------------------------------------------------------------------
def _count_option(value: bool | int, name: str, default: int) -> int:
    """Return 0 for ``False``, ``default`` for ``True``, else the positive integer ``value``.

    Returns
    -------
    int
        The count (``-1`` means "all" for batch sharpness).

    Raises
    ------
    ValueError
        For a non-positive integer or another type.
    """
    if value is False or value is None:
        return 0
    if value is True:
        return default
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a bool or a positive integer; got {value!r}.")
    return value


def _linearization(
    instances: list[Any], problem: Problem
) -> tuple[FrozenLinearization | None, str]:
    """Return the frozen linearization of a lone linear optimizer, or why there is none.

    Returns
    -------
    tuple
        ``(linearization, "")``, or ``(None, "no state")`` for an optimizer that has not
        stepped, or ``(None, reason)`` for a step that is not linear (or several optimizers).
    """
    if len(instances) != 1:
        return None, "several optimizers"
    try:
        return linearize(instances[0], problem), ""
    except MissingOptimizerState:
        return None, "no state"
    except NotLinearizable as error:
        return None, str(error)


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore the global torch (CPU and CUDA), numpy and Python RNG states on exit.

    Yields
    ------
    None
        Nothing; the states are restored when the block exits.
    """
    cpu = torch.get_rng_state()
    cuda = (
        torch.cuda.get_rng_state_all()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None
    )
    # The legacy global numpy state is exactly what user code may depend on: save it.
    numpy_state = np.random.get_state()  # noqa: NPY002
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)


def _float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats by ``None``, recursively.

    Returns
    -------
    Any
        The cleaned object.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj
