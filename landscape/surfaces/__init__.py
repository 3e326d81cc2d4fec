"""Loss surfaces: directions in parameter space and grids of losses along them."""

from landscape.surfaces.directions import (
    direction_between,
    orthogonalize,
    project_trajectory,
    random_directions,
    trajectory_directions,
)
from landscape.surfaces.grid import Surface, surface
from landscape.surfaces.paths import interpolate, plane

__all__ = [
    "Surface",
    "direction_between",
    "interpolate",
    "orthogonalize",
    "plane",
    "project_trajectory",
    "random_directions",
    "surface",
    "trajectory_directions",
]
