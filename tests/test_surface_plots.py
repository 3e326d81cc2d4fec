"""Loss-surface figures render the right artists, refuse bad input, and VTK export parses."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet
from torch import nn

import landscape as ls
from landscape.report import (
    plot_surface_1d,
    plot_surface_2d,
    plot_surface_3d,
    plot_surfaces,
    surface_to_vtk,
)
from landscape.surfaces.grid import Surface

matplotlib.use("Agg")

import matplotlib.pyplot as plt


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _data(seed=0):
    torch.manual_seed(seed)
    return torch.randn(24, 3), torch.randint(0, 2, (24,))


@pytest.fixture(scope="module")
def surf2d():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    dirs = ls.random_directions(model, n=2)
    return ls.surface(
        model,
        _data(),
        directions=dirs,
        coords=np.linspace(-1, 1, 5),
        progress=False,
    )


@pytest.fixture(scope="module")
def surf1d():
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    dirs = ls.random_directions(model, n=1)
    return ls.surface(
        model,
        _data(),
        directions=dirs,
        coords=np.linspace(-1, 1, 7),
        progress=False,
    )


@pytest.fixture(scope="module")
def path1d():
    torch.manual_seed(2)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    return ls.interpolate(a, b, _data(), num=5, extend=0.5, progress=False)


@pytest.fixture(scope="module")
def plane2d():
    torch.manual_seed(3)
    a, b, c = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 2)
    return ls.plane(a, b, c, _data(), num=6, progress=False)


def _bowl(n1=5, n2=4, *, accuracy=True, description="", scale=1.0):
    x, y = np.linspace(-1, 1, n1), np.linspace(-2, 2, n2)
    loss = scale * (1.0 + x[:, None] ** 2 + 0.5 * y[None, :] ** 2)
    return Surface(
        coords=(x, y),
        loss=loss,
        accuracy=np.clip(1 - loss / 10, 0, 1) if accuracy else None,
        origin_loss=scale,
        origin_accuracy=0.9 if accuracy else None,
        settings={"description": description},
    )


def _line(loss, t=None, description="", accuracy=None):
    t = np.linspace(-1, 1, len(loss)) if t is None else np.asarray(t, dtype=float)
    return Surface(
        coords=(t,),
        loss=np.asarray(loss, dtype=float),
        accuracy=accuracy,
        origin_loss=float(np.asarray(loss)[np.argmin(np.abs(t))]),
        origin_accuracy=None,
        settings={"description": description},
    )


# -- 1-D ------------------------------------------------------------------------------------------
def test_1d_loss_accuracy_both(surf1d):
    ax = plot_surface_1d(surf1d, label="lin")
    ydata = ax.lines[0].get_ydata()
    np.testing.assert_array_equal(ydata, surf1d.loss)
    assert ax.lines[0].get_label() == "lin loss"
    star = ax.lines[1]
    assert star.get_marker() == "*" and star.get_ydata()[0] == surf1d.origin_loss
    assert ax.get_xlabel() and ax.get_ylabel() == "loss"

    ax = plot_surface_1d(surf1d, metric="accuracy")
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), surf1d.accuracy)

    ax = plot_surface_1d(surf1d, metric="both", log=True)
    assert len(ax.figure.axes) == 2
    twin = next(a for a in ax.figure.axes if a is not ax)
    assert ax.get_yscale() == "log" and twin.get_yscale() == "linear"
    assert twin.get_ylabel() == "accuracy"
    np.testing.assert_array_equal(twin.lines[0].get_ydata(), surf1d.accuracy)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"loss", "accuracy", "origin"}


def test_1d_interpolation_path_marks_ends_and_barrier():
    t = np.linspace(-0.5, 1.5, 9)  # contains 0 and 1 exactly
    loss = 1.0 + 2.0 * np.sin(np.pi * np.clip(t, 0, 1))  # barrier 2 at t = 0.5
    path = _line(loss, t=t, description="interpolate(model_a, model_b)")
    ax = plot_surface_1d(path)
    assert path.barrier() == pytest.approx(2.0)
    assert "barrier 2" in ax.get_title()
    vlines = [ln for ln in ax.lines if list(ln.get_xdata()) in ([0, 0], [1, 1])]
    assert len(vlines) == 2  # t = 0 and t = 1
    (top,) = ax.child_axes  # the models named on a secondary x-axis
    assert list(top.get_xticks()) == [0.0, 1.0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["θ_A (t=0)", "θ_B (t=1)"]
    assert any(t.get_text().startswith("barrier") for t in ax.texts)
    chord = next(ln for ln in ax.lines if ln.get_label().startswith("chord"))
    np.testing.assert_allclose(chord.get_ydata(), [1.0, 1.0])


def test_1d_real_interpolation(path1d):
    ax = plot_surface_1d(path1d, metric="both")
    assert "barrier" in ax.get_title()
    assert ax.get_xlabel() == "t"


def test_1d_errors(surf2d, surf1d):
    with pytest.raises(ValueError, match="1-D surface; this one is 2-D"):
        plot_surface_1d(surf2d)
    with pytest.raises(ValueError, match="metric must be"):
        plot_surface_1d(surf1d, metric="flatness")
    with pytest.raises(ValueError, match="no accuracy"):
        plot_surface_1d(_line([1.0, 0.5, 1.0]), metric="both")
    with pytest.raises(ValueError, match="no finite loss"):
        plot_surface_1d(_line([np.nan, np.nan, np.nan]))
    with pytest.raises(ValueError, match="positive"):
        plot_surface_1d(_line([1.0, 0.0, 1.0]), log=True)


# -- 2-D ------------------------------------------------------------------------------------------
def test_2d_kinds(surf2d):
    ax = plot_surface_2d(surf2d)  # contour lines with labels and a colorbar
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 1 and not contours[0].filled
    assert len(ax.texts) > 0  # contour labels
    assert len(ax.figure.axes) == 2  # + colorbar
    star = next(ln for ln in ax.lines if ln.get_marker() == "*")
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (0.0, 0.0)
    assert ax.get_xlabel() == "direction 1" and ax.get_ylabel() == "direction 2"

    ax = plot_surface_2d(surf2d, kind="filled", levels=12, colorbar=False)
    assert len(ax.figure.axes) == 1
    (filled,) = ax.collections
    assert isinstance(filled, ContourSet) and filled.filled and len(filled.levels) == 12

    ax = plot_surface_2d(surf2d, kind="heatmap", log=True)
    (mesh,) = ax.collections
    assert isinstance(mesh, QuadMesh)
    assert type(mesh.norm).__name__ == "LogNorm"
    x, y = surf2d.coords
    half = (x[1] - x[0]) / 2
    assert ax.get_xlim() == pytest.approx((x[0] - half, x[-1] + half))
    assert ax.get_ylim() == pytest.approx((y[0] - half, y[-1] + half))
    # cell (i, j) of the image is the loss at (x_i, y_j): rows of the mesh are y
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(5, 5), surf2d.loss.T)


def test_2d_heatmap_orientation_on_non_square_grid():
    s = _bowl(5, 4)
    ax = plot_surface_2d(s, kind="heatmap", colorbar=False)
    (mesh,) = ax.collections
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 5), s.loss.T)
    assert ax.get_xlim() == pytest.approx((-1.25, 1.25))
    assert ax.get_ylim() == pytest.approx((-2 - 2 / 3, 2 + 2 / 3))


def test_2d_vmin_vmax_clip_and_levels():
    s = _bowl(9, 9)
    ax = plot_surface_2d(s, kind="filled", vmin=1.0, vmax=1.5, levels=6)
    (cs,) = ax.collections
    np.testing.assert_allclose(cs.levels, np.linspace(1.0, 1.5, 6))
    assert cs.norm.vmin == 1.0 and cs.norm.vmax == 1.5
    assert cs.extend == "max"
    ax = plot_surface_2d(s, kind="contour", levels=[1.1, 1.2, 1.4], colorbar=False)
    np.testing.assert_allclose(ax.collections[0].levels, [1.1, 1.2, 1.4])


def test_2d_trajectory_and_plane(surf2d, plane2d):
    traj = torch.tensor([[-0.8, 0.6], [-0.4, 0.3], [0.0, 0.0]], dtype=torch.float64)
    ax = plot_surface_2d(surf2d, kind="filled", trajectory=traj)
    line = next(ln for ln in ax.lines if ln.get_label() == "trajectory")
    np.testing.assert_allclose(line.get_xdata(), traj[:, 0].numpy())
    assert line.get_marker() == "o" and line.get_linestyle() == "-"

    ax = plot_surface_2d(plane2d, kind="contour")
    models = next(ln for ln in ax.lines if ln.get_label().startswith("models"))
    np.testing.assert_allclose(
        np.stack([models.get_xdata(), models.get_ydata()], 1), plane2d.settings["model_coords"]
    )
    assert {"A", "B", "C"} <= {t.get_text() for t in ax.texts}
    assert ax.get_aspect() == 1.0


def test_2d_errors(surf1d, surf2d):
    with pytest.raises(ValueError, match="2-D surface; this one is 1-D"):
        plot_surface_2d(surf1d)
    with pytest.raises(ValueError, match="kind must be"):
        plot_surface_2d(surf2d, kind="wireframe")
    with pytest.raises(ValueError, match="metric must be"):
        plot_surface_2d(surf2d, metric="sharpness")
    with pytest.raises(ValueError, match="no accuracy"):
        plot_surface_2d(_bowl(accuracy=False), metric="accuracy")
    nan = _bowl()
    nan.loss[...] = np.nan
    with pytest.raises(ValueError, match="no finite loss"):
        plot_surface_2d(nan)
    with pytest.raises(ValueError, match=r"shape \(k, 2\)"):
        plot_surface_2d(surf2d, trajectory=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="vmin must be less"):
        plot_surface_2d(surf2d, vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match="levels"):
        plot_surface_2d(surf2d, levels=[3.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        plot_surface_2d(_bowl(scale=-1.0), log=True)


def test_2d_partial_nan_surface_renders():
    s = _bowl(6, 6)
    s.loss[3:, :] = np.nan  # a resumed computation, half done
    for kind in ("contour", "filled", "heatmap"):
        ax = plot_surface_2d(s, kind=kind)
        assert ax.collections
    ax = plot_surface_3d(s)
    ax.figure.canvas.draw()


# -- side by side ---------------------------------------------------------------------------------
def test_plot_surfaces_share_one_scale(surf2d, plane2d):
    a, b = _bowl(), _bowl(scale=3.0)
    fig = plot_surfaces([a, b], labels=["small", "large"])
    panels, colorbars = fig.axes[:2], fig.axes[2:]
    assert len(colorbars) == 1
    sets = [p.collections[0] for p in panels]
    assert sets[0].norm is sets[1].norm
    assert sets[0].norm.vmin == pytest.approx(a.loss.min())
    assert sets[0].norm.vmax == pytest.approx(b.loss.max())
    np.testing.assert_array_equal(sets[0].levels, sets[1].levels)
    assert [p.get_title() for p in panels] == ["small", "large"]

    fig = plot_surfaces([surf2d, plane2d], kind="heatmap", log=True)
    norms = [p.collections[0].norm for p in fig.axes[:2]]
    assert norms[0] is norms[1] and type(norms[0]).__name__ == "LogNorm"

    with pytest.raises(ValueError, match="at least one"):
        plot_surfaces([])
    with pytest.raises(ValueError, match="labels"):
        plot_surfaces([a, b], labels=["one"])
    with pytest.raises(ValueError, match=r"surface 1\).*2-D"):
        plot_surfaces([a, _line([1.0, 2.0])])
    with pytest.raises(ValueError, match="kind must be"):
        plot_surfaces([a], kind="bars")


# -- 3-D ------------------------------------------------------------------------------------------
def test_3d(surf2d, surf1d):
    ax = plot_surface_3d(surf2d)
    assert ax.name == "3d"
    assert len(ax.collections) == 1  # the Poly3DCollection (the origin is a line)
    ax.figure.canvas.draw()  # 3-D paths are projected at draw time
    assert len(ax.collections[0].get_paths()) == 4 * 4  # one quad per grid cell
    assert ax.get_zlabel() == "loss"
    ax = plot_surface_3d(surf2d, log=True, cmap="magma")
    assert "log" in ax.get_zlabel()
    fig = plt.figure()
    mine = fig.add_subplot(projection="3d")
    assert plot_surface_3d(_bowl(), ax=mine) is mine
    with pytest.raises(ValueError, match="3-D axes"):
        plot_surface_3d(surf2d, ax=fig.add_subplot(2, 2, 4))
    with pytest.raises(ValueError, match="2-D surface; this one is 1-D"):
        plot_surface_3d(surf1d)


# -- VTK ------------------------------------------------------------------------------------------
def _read_vtk(path):
    with open(path, encoding="ascii") as f:
        lines = f.read().splitlines()
    assert lines[0] == "# vtk DataFile Version 3.0"
    assert lines[2] == "ASCII" and lines[3] == "DATASET STRUCTURED_GRID"
    dims = tuple(int(v) for v in lines[4].split()[1:])
    kind, count, dtype = lines[5].split()
    assert (kind, dtype) == ("POINTS", "double")
    count = int(count)
    points = np.array([[float(v) for v in ln.split()] for ln in lines[6 : 6 + count]])
    rest = lines[6 + count :]
    assert rest[0] == f"POINT_DATA {count}"
    fields = {}
    k = 1
    while k < len(rest):
        _, name, ftype, ncomp = rest[k].split()
        assert ftype in ("double", "int")
        assert ncomp == "1" and rest[k + 1] == "LOOKUP_TABLE default"
        fields[name] = np.array([float(v) for v in rest[k + 2 : k + 2 + count]])
        k += 2 + count
    return dims, points, fields


def test_vtk_roundtrip(tmp_path, surf2d):
    s = _bowl(5, 4, description="two\nlines")
    out = surface_to_vtk(s, tmp_path / "bowl.vtk")
    assert out == str(tmp_path / "bowl.vtk")
    dims, points, fields = _read_vtk(out)
    assert dims == (5, 4, 1) and points.shape == (20, 3)
    with open(out) as f:
        assert f.read().splitlines()[1] == "landscape loss surface: two lines"
    # x varies fastest: point i + n1 * j is (x_i, y_j, loss[i, j])
    grid = points.reshape(4, 5, 3)
    np.testing.assert_allclose(grid[..., 0], np.tile(s.coords[0], (4, 1)), rtol=1e-11)
    np.testing.assert_allclose(grid[..., 1], np.tile(s.coords[1][:, None], (1, 5)), rtol=1e-11)
    np.testing.assert_allclose(grid[..., 2], s.loss.T, rtol=1e-11)
    np.testing.assert_allclose(fields["loss"], s.loss.T.ravel(), rtol=1e-11)
    assert fields["valid"].min() == 1

    out = surface_to_vtk(
        surf2d, tmp_path / "real.vtk", log=True, zmax=float(np.median(surf2d.loss))
    )
    _, points, fields = _read_vtk(out)
    expected = np.log10(np.minimum(surf2d.loss, np.median(surf2d.loss))).T.ravel()
    np.testing.assert_allclose(fields["log10_loss"], expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(points[:, 2], expected, rtol=1e-11, atol=1e-12)

    _, _, fields = _read_vtk(surface_to_vtk(s, tmp_path / "acc.vtk", metric="accuracy"))
    np.testing.assert_allclose(fields["accuracy"], s.accuracy.T.ravel(), rtol=1e-11)


def test_vtk_nan_points_flagged(tmp_path):
    s = _bowl(3, 3)
    s.loss[0, 0] = np.nan
    _, points, fields = _read_vtk(surface_to_vtk(s, tmp_path / "nan.vtk"))
    assert np.isfinite(points).all() and fields["valid"].tolist() == [0] + [1] * 8
    assert points[0, 2] == pytest.approx(np.nanmax(s.loss))


def test_vtk_errors(tmp_path, surf1d):
    with pytest.raises(ValueError, match="2-D surface"):
        surface_to_vtk(surf1d, tmp_path / "x.vtk")
    with pytest.raises(ValueError, match="metric must be"):
        surface_to_vtk(_bowl(), tmp_path / "x.vtk", metric="both")
    with pytest.raises(ValueError, match="no accuracy"):
        surface_to_vtk(_bowl(accuracy=False), tmp_path / "x.vtk", metric="accuracy")
    with pytest.raises(ValueError, match="positive zmax"):
        surface_to_vtk(_bowl(), tmp_path / "x.vtk", log=True, zmax=0.0)


# -- files ----------------------------------------------------------------------------------------
def test_every_figure_saves_png(tmp_path, surf1d, surf2d, path1d, plane2d):
    figures = {
        "1d": plot_surface_1d(surf1d, metric="both").figure,
        "path": plot_surface_1d(path1d).figure,
        "contour": plot_surface_2d(plane2d).figure,
        "filled": plot_surface_2d(surf2d, kind="filled", log=True).figure,
        "heatmap": plot_surface_2d(surf2d, kind="heatmap").figure,
        "3d": plot_surface_3d(surf2d).figure,
        "panels": plot_surfaces([surf2d, plane2d], labels=["random", "plane"]),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
