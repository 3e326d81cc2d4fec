"""Figures for spectra and per-layer curvature (matplotlib, imported lazily)."""

from landscape.report.plots import plot_eigenvalues, plot_layerwise, plot_spectral_density

__all__ = ["plot_eigenvalues", "plot_layerwise", "plot_spectral_density"]
