"""Curvature metrics assembled from operators and spectral algorithms."""

from landscape.metrics.layerwise import LayerCurvature, LayerwiseResult, layerwise

__all__ = ["LayerCurvature", "LayerwiseResult", "layerwise"]
