r"""The documents :class:`Report` and :class:`Comparison`, and :func:`load`.

A document holds result records — the eigenpairs, estimates, densities, surfaces and
learning-rate results the analysis computed — and renders them: ranked findings
(:mod:`landscape.report.findings`), a plain-text :meth:`~Report.summary`, figures
(:meth:`~Report.plot`), one self-contained HTML page (:meth:`~Report.to_html`, and inline
in Jupyter) and an HDF5 file (:meth:`~Report.save`, :func:`load`; the encoding is in
:mod:`landscape.report.codec`, files of format version 1 are read through
:mod:`landscape.report.migrate`). Every section is optional: what is absent is not shown.

Examples
--------
>>> import os, tempfile, torch
>>> from landscape.linalg.results import Estimate
>>> report = Report(loss=LossValue(0.25, accuracy=0.9),
...                 trace=Estimate(12.0, 0.5, num_matvecs=30, num_passes=2, method="hutch++"))
>>> report["trace"].value
12.0
>>> path = report.save(os.path.join(tempfile.mkdtemp(), "report.h5"))
>>> load(path).trace == report.trace
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from landscape.linalg.results import Eigenpairs, Estimate, SpectralDensity
from landscape.metrics.block_spectra import BlockSpectra
from landscape.metrics.coherence import CoherenceResult
from landscape.metrics.layerwise import LayerwiseResult
from landscape.metrics.learning_rate import LearningRateResult
from landscape.metrics.sharpness import SharpnessResult
from landscape.metrics.subsets import SubsetSpread
from landscape.planning import Plan
from landscape.records import Record
from landscape.report import codec, figures, findings, page, sections
from landscape.report.contents import (
    ExtremeEigenvalues,
    Interpolation,
    LearningRates,
    LossValue,
    StageCost,
)
from landscape.report.findings import Finding
from landscape.surfaces.grid import Surface

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Comparison",
    "Eigenpairs",
    "ExtremeEigenvalues",
    "Interpolation",
    "LearningRateResult",
    "LearningRates",
    "LossValue",
    "Report",
    "StageCost",
    "load",
]

FORMAT, FORMAT_VERSION = codec.FORMAT, codec.FORMAT_VERSION


class _Document(Record):
    """What :class:`Report` and :class:`Comparison` share: access, text, figures, HTML, files."""

    _KIND: ClassVar[str] = ""
    _TITLE: ClassVar[str] = ""
    _SECTIONS: ClassVar[tuple[str, ...]] = ()

    # -- provided by each document
    def findings(self) -> list[Finding]:
        """Return the ranked findings (see :mod:`landscape.report.findings`).

        Returns
        -------
        list of Finding
            Most important first.
        """
        raise NotImplementedError

    def sections(self) -> list[sections.Section]:
        """Return the tables, in page order.

        Returns
        -------
        list of Section
            One per topic that has data.
        """
        raise NotImplementedError

    def _header(self) -> list[str]:
        raise NotImplementedError

    # -- shared
    def plot_kinds(self) -> list[str]:
        """Return the plot kinds this document has data for.

        Returns
        -------
        list of str
            Valid arguments of :meth:`plot`, in a fixed order.
        """
        return figures.kinds(self)

    def __getitem__(self, name: str) -> Any:
        value = getattr(self, name, None) if name in self._SECTIONS else None
        if value is None or (isinstance(value, dict) and not value):
            raise KeyError(f"this {self._KIND} has no section {name!r}; it has {self.present}.")
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.present

    @property
    def present(self) -> list[str]:
        """The sections that hold data, in order."""
        out = []
        for name in self._SECTIONS:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, dict) and not value):
                out.append(name)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sections={self.present})"

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        """Return the findings, then every section as plain text.

        Returns
        -------
        str
            The header, the ranked findings, one block per section.
        """
        blocks = ["\n".join(self._header())]
        found = self.findings()
        if found:
            blocks.append(
                "Findings\n" + "\n".join(f"{i}. {f.text()}" for i, f in enumerate(found, 1))
            )
        blocks += [s.text() for s in self.sections()]
        return "\n\n".join(blocks)

    def plot(self, kind: str) -> Figure:
        """Draw one figure.

        Parameters
        ----------
        kind : str
            One of :meth:`plot_kinds`.

        Returns
        -------
        matplotlib.figure.Figure
            A new figure (close it with ``matplotlib.pyplot.close`` when done).

        Raises
        ------
        ValueError
            If the kind is unknown or its section is missing (the message lists the kinds
            available).
        """
        available = self.plot_kinds()
        if kind not in available:
            known = figures.KINDS[self._KIND]
            reason = (
                f"this {self._KIND} has no data for plot kind {kind!r}"
                if kind in known
                else f"unknown plot kind {kind!r}"
            )
            raise ValueError(
                f"{reason}; the kinds available for this {self._KIND} are {available} "
                f"(of {list(known)})."
            )
        return self._draw(kind)

    def _draw(self, kind: str) -> Figure:
        return figures.figure(self, kind)

    def figures(self) -> dict[str, Figure]:
        """Draw every available figure.

        Returns
        -------
        dict of str to matplotlib.figure.Figure
            By plot kind, in the order of :meth:`plot_kinds`.
        """
        return {kind: self.plot(kind) for kind in self.plot_kinds()}

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the document to an HDF5 file, atomically; read it back with :func:`load`.

        The file is written beside ``path`` under a temporary name, synced, and renamed
        over it: a crash or kill during the save leaves the previous file (or none) and
        never a partial one.

        Parameters
        ----------
        path : str or PathLike
            The file (conventionally ``*.h5``); replaced if it exists.

        Returns
        -------
        str
            ``path`` as a string, once the file is complete.

        Raises
        ------
        FileNotFoundError, IsADirectoryError
            If the directory of ``path`` does not exist, or ``path`` is a directory.
        TypeError
            If a value cannot be stored (the previous file, if any, is kept).
        """
        return codec.write(path, self._KIND, self.to_dict())

    def _html(self, heading: str, all_figures: bool) -> str:
        return page.body(
            self._header(),
            self.findings(),
            self.sections(),
            self._draw,
            self.plot_kinds(),
            heading=heading,
            figures=all_figures,
        )

    def _repr_html_(self) -> str:
        return self._html("h3", True)

    def to_html(self, path: str | os.PathLike[str]) -> str:
        """Write one self-contained HTML page: findings, tables with their figures, details.

        Figures are embedded PNG images and the style sheet is inline: the page loads
        nothing from the network and runs no scripts. It is written atomically.

        Parameters
        ----------
        path : str or PathLike
            The file (conventionally ``*.html``); replaced if it exists.

        Returns
        -------
        str
            The path written.
        """
        text = page.page(self._header()[0], self._html("h1", True))

        def write(temporary: str) -> None:
            with open(temporary, "x", encoding="utf-8") as handle:
                handle.write(text)

        return codec.atomic_write(path, write, "page")


@dataclass(frozen=True, eq=False, repr=False)
class Report(_Document):
    r"""The result of :func:`landscape.analyze`: curvature, surfaces, learning rates of a model.

    Each attribute is one stage's result record (``None`` when the stage did not run). Read
    them as attributes or by name (``report["trace"]``); print the report (or call
    :meth:`summary`) for ranked findings and tables, :meth:`plot` for figures,
    :meth:`to_html` for a page, :meth:`save` and :func:`load` for files.

    Attributes
    ----------
    metadata : dict
        Model, data, versions, seed, budget, device, backend choices.
    loss : LossValue
        The mean loss and accuracy.
    eigenvalues : ExtremeEigenvalues
        Top and bottom Hessian eigenvalues with residuals.
    subsets : SubsetSpread
        λmax and the trace across disjoint subsets of the curvature sample.
    trace, frobenius : Estimate
        :math:`\operatorname{tr}H` and :math:`\lVert H\rVert_F`.
    density : SpectralDensity
        The SLQ spectral density with its outliers.
    layerwise : LayerwiseResult
        Per-layer traces.
    block_spectra : BlockSpectra
        Per-module spectra and their heterogeneity.
    surface_1d, surface_2d : Surface
        Filter-normalized loss surfaces.
    sharpness : SharpnessResult
        Sharpness measures with their invariance.
    coherence : CoherenceResult
        Gradient coherence and noise scale.
    learning_rate : LearningRates
        Largest stable learning rates per optimizer and batch size.
    costs : dict of str to StageCost
        What each stage cost.
    plan : Plan
        The time plan, when ``analyze(time_budget=...)`` made one.
    notes : dict of str to str
        Why a stage has no result (e.g. too few samples for the subsets).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> report = Report(loss=LossValue(0.25, accuracy=0.9),
    ...                 trace=Estimate(40.0, 1.5, num_matvecs=60, num_passes=2, method="hutch++"),
    ...                 costs={"trace": StageCost(num_matvecs=60, passes=2, seconds=0.4)})
    >>> print(report.summary())
    Landscape report
    <BLANKLINE>
    Loss
      loss      0.25
      accuracy  0.9
    <BLANKLINE>
    Hessian
      trace  40 ± 1.5  (hutch++)
    <BLANKLINE>
    Cost
      stage  HVPs  passes  seconds
      trace  60    2       0.4
      total  60    2       0.4
    >>> report.plot_kinds()
    ['metrics']
    """

    metadata: dict[str, Any] = field(default_factory=dict)
    loss: LossValue | None = None
    eigenvalues: ExtremeEigenvalues | None = None
    subsets: SubsetSpread | None = None
    trace: Estimate | None = None
    frobenius: Estimate | None = None
    density: SpectralDensity | None = None
    layerwise: LayerwiseResult | None = None
    block_spectra: BlockSpectra | None = None
    surface_1d: Surface | None = None
    surface_2d: Surface | None = None
    sharpness: SharpnessResult | None = None
    coherence: CoherenceResult | None = None
    learning_rate: LearningRates | None = None
    costs: dict[str, StageCost] = field(default_factory=dict)
    plan: Plan | None = None
    notes: dict[str, str] = field(default_factory=dict)

    _KIND: ClassVar[str] = "report"
    _TITLE: ClassVar[str] = "Landscape report"

    def findings(self) -> list[Finding]:  # noqa: D102 - documented in _Document
        return findings.report_findings(self)

    def sections(self) -> list[sections.Section]:  # noqa: D102
        return sections.report_sections(self)

    def _header(self) -> list[str]:
        return sections.header_lines(self.metadata, self._TITLE)


Report._SECTIONS = tuple(f.name for f in fields(Report))


@dataclass(frozen=True, eq=False, repr=False)
class Comparison(_Document):
    r"""Several models side by side: their reports, the path between two, shared-scale surfaces.

    Attributes
    ----------
    reports : dict of str to Report
        Each model's report, in order.
    interpolation : Interpolation or None
        The loss along :math:`(1-t)\theta_A + t\theta_B` between the first two models.
    metadata : dict
        Budget, seed, creation time.

    Measures that are not invariant to function-preserving reparametrizations are flagged:
    their differences may be a scale artifact (Dinh et al. 2017).
    """

    reports: dict[str, Report] = field(default_factory=dict)
    interpolation: Interpolation | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    _KIND: ClassVar[str] = "comparison"
    _TITLE: ClassVar[str] = "Landscape comparison"

    @property
    def names(self) -> list[str]:
        """The models compared, in order."""
        return list(self.reports)

    def findings(self) -> list[Finding]:  # noqa: D102
        return findings.comparison_findings(self)

    def sections(self) -> list[sections.Section]:  # noqa: D102
        out = sections.comparison_sections(self)
        for name, report in self.reports.items():
            for section in report.sections():
                # the loss, learning rates, surfaces and costs are above, side by side
                shown = section.topic in ("cost", "overview", "surface")
                if shown or section.title.startswith("Largest stable learning rate"):
                    continue
                section.title = f"{name}: {section.title}"
                section.topic, section.folded, section.figures = "models", True, ()
                out.append(section)
        return out

    def _header(self) -> list[str]:
        lines = sections.header_lines(self.metadata, self._TITLE)
        if self.names and ":" not in lines[0]:
            lines[0] += ": " + " vs ".join(self.names)
        return lines


Comparison._SECTIONS = tuple(f.name for f in fields(Comparison))


def load(path: str | os.PathLike[str]) -> Report | Comparison:
    """Read a report or comparison written by :meth:`Report.save` or :meth:`Comparison.save`.

    Files of every earlier format version load too (:mod:`landscape.report.migrate`).

    Parameters
    ----------
    path : str or PathLike
        The HDF5 file.

    Returns
    -------
    Report or Comparison
        As saved (by the file's ``kind``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    PermissionError
        If it cannot be read.
    ValueError
        If the file is not HDF5, not a landscape report (a foreign HDF5 file), written in
        a newer format version, or corrupt.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "r.h5")
    >>> _ = Report(loss=LossValue(1.5)).save(path)
    >>> load(path).loss
    LossValue(value=1.5, accuracy=None, num_classes=None)
    """
    from landscape.report import migrate

    kind, version, data = codec.read(path)
    try:
        if version == 1:
            return migrate.from_version_1(kind, data)
        document = Report if kind == "report" else Comparison
        return document.from_dict(data)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError) as error:
        raise ValueError(f"{os.fspath(path)!r} is a corrupt landscape report: {error}") from error
