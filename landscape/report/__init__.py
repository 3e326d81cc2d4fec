"""Reports: documents of result records, their findings, figures, pages and files.

Matplotlib is imported lazily, inside the functions that draw.
"""

from landscape.report.contents import (
    ExtremeEigenvalues,
    Interpolation,
    LearningRates,
    LossValue,
    StageCost,
)
from landscape.report.document import Comparison, Report, load
from landscape.report.findings import Finding
from landscape.report.plots import plot_eigenvalues, plot_layerwise, plot_spectral_density
from landscape.report.surface_plots import (
    plot_surface_1d,
    plot_surface_2d,
    plot_surface_3d,
    plot_surfaces,
    surface_to_vtk,
)
from landscape.report.training_plots import (
    plot_learning_rates,
    plot_metric_table,
    plot_sharpness_history,
)

__all__ = [
    "Comparison",
    "ExtremeEigenvalues",
    "Finding",
    "Interpolation",
    "LearningRates",
    "LossValue",
    "Report",
    "StageCost",
    "load",
    "plot_eigenvalues",
    "plot_layerwise",
    "plot_learning_rates",
    "plot_metric_table",
    "plot_sharpness_history",
    "plot_spectral_density",
    "plot_surface_1d",
    "plot_surface_2d",
    "plot_surface_3d",
    "plot_surfaces",
    "surface_to_vtk",
]
