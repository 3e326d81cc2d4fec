"""Loss surfaces: directions in parameter space and grids of losses along them."""

from landscape.surfaces.directions import (
    direction_between,
    orthogonalize,
    project_trajectory,
    random_directions,
    trajectory_directions,
)
from landscape.surfaces.grid import Surface, surface

__all__ = [
    "Surface",
    "direction_between",
    "orthogonalize",
    "project_trajectory",
    "random_directions",
    "surface",
    "trajectory_directions",
]
