"""Curvature metrics assembled from operators and spectral algorithms."""

from landscape.metrics.block_spectra import BlockSpectra, block_spectra
from landscape.metrics.coherence import (
    CoherenceResult,
    HessianSettings,
    NoiseScale,
    ParamGSNR,
    coherence,
    noise_scale,
)
from landscape.metrics.layerwise import LayerCurvature, LayerwiseResult, layerwise
from landscape.metrics.learning_rate import (
    LearningRateResult,
    Verification,
    VerifySettings,
    max_learning_rate,
)
from landscape.metrics.sharpness import (
    MEASURES,
    SharpnessMeasure,
    SharpnessResult,
    SharpnessSettings,
    sharpness,
)
from landscape.metrics.subsets import SubsetEstimate, SubsetSpread, subset_spread
from landscape.metrics.thresholds import OptimizerSettings, optimizer_settings, stability_threshold

__all__ = [
    "MEASURES",
    "BlockSpectra",
    "CoherenceResult",
    "HessianSettings",
    "LayerCurvature",
    "LayerwiseResult",
    "LearningRateResult",
    "NoiseScale",
    "OptimizerSettings",
    "ParamGSNR",
    "SharpnessMeasure",
    "SharpnessResult",
    "SharpnessSettings",
    "SubsetEstimate",
    "SubsetSpread",
    "Verification",
    "VerifySettings",
    "block_spectra",
    "coherence",
    "layerwise",
    "max_learning_rate",
    "noise_scale",
    "optimizer_settings",
    "sharpness",
    "stability_threshold",
    "subset_spread",
]
