"""Loss surfaces: directions against the reference semantics, grids against closed forms and plain
evaluations, paths between models, Hessian and trajectory axes."""

import copy

import numpy as np
import pytest
import torch
from cases import CASE_IDS, CASES
from state import assert_unchanged, snapshot
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape as ls

pytestmark = pytest.mark.usefixtures("one_thread")


def _size(batch):
    return len(batch["labels"]) if isinstance(batch, dict) else len(batch[-1])


def _eval_loss(loss, model, batches):
    """Sample-weighted mean of ``loss(model, batch)``: the plain evaluation, no landscape code."""
    total = 0.0
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            total += _size(batch) * float(loss(model, batch))
    return total / sum(_size(b) for b in batches)


def _ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _mse(model, batch):
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def _moved(model, directions, coefficients):
    """A copy of ``model`` at theta_0 + sum_i c_i d_i (added in order, as a grid point)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in out.named_parameters():
            for c, d in zip(coefficients, directions):
                if name in d:
                    p.copy_(p + c * d[name])
    return out


def _dot(a, b):
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


def _trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


class EmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, tokens):
        return self.out(self.emb(tokens).mean(1))


def _embedding_problem():
    torch.manual_seed(0)
    model = EmbeddingNet().double().eval()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 11, (17, 5), generator=g)
    y = torch.randint(0, 3, (17,), generator=g)
    return model, [(tokens[:8], y[:8]), (tokens[8:], y[8:])]


# -- 1. directions ------------------------------------------------------------------------------
def _reference_directions(model, n, norm, ignore, seed):
    """Li et al.'s net_plotter.py semantics, written out independently.

    ``get_random_weights``: one ``randn(w.size())`` per weight, direction after direction;
    ``normalize_directions_for_weights``: 1-D tensors zeroed (ignore="biasbn") or copied from
    the weight; others normalized per filter (slice along dim 0), per layer or by the weight.
    Our draws come from a seeded float32 CPU generator and are cast to the weight's dtype.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = [(k, p.detach()) for k, p in model.named_parameters() if p.requires_grad]
    directions = []
    for _ in range(n):
        direction = {}
        for name, w in weights:
            d = torch.randn(w.shape, generator=generator).to(w.dtype)
            if d.dim() <= 1:
                d = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
            elif norm == "filter":
                for i in range(d.shape[0]):
                    d[i] = d[i] * (w[i].norm() / (d[i].norm() + 1e-10))
            elif norm == "layer":
                d = d * (w.norm() / (d.norm() + 1e-10))
            elif norm == "weight":
                d = d * w
            direction[name] = d
        directions.append(direction)
    return directions


MODELS = {
    "cnn_batchnorm": lambda: CASES[1].build()[0],
    "embedding": lambda: _embedding_problem()[0],
    "frozen_shared": lambda: CASES[2].build()[0],
}


@pytest.mark.parametrize("ignore", ["biasbn", None])
@pytest.mark.parametrize("norm", ["filter", "layer", "weight", None])
@pytest.mark.parametrize("which", list(MODELS))
def test_random_directions_match_reference_semantics(which, norm, ignore):
    model = MODELS[which]()
    before = snapshot(model)
    got = ls.random_directions(model, n=2, norm=norm, ignore=ignore, seed=3)
    expected = _reference_directions(model, 2, norm, ignore, seed=3)
    assert len(got) == 2
    for d, e in zip(got, expected):
        assert list(d) == list(e) == _trainable_names(model)  # frozen parameters never move
        for name in e:
            assert d[name].dtype == e[name].dtype and d[name].shape == e[name].shape
            torch.testing.assert_close(d[name], e[name], rtol=1e-12, atol=0)
    assert not any(torch.equal(got[0][k], got[1][k]) for k in got[0] if got[0][k].dim() >= 2)
    assert_unchanged(model, before)


@pytest.mark.parametrize("which", ["cnn_batchnorm", "embedding"])
def test_filter_and_layer_norms_equal_the_weights(which):
    model = MODELS[which]()
    weights = dict(model.named_parameters())
    (filt,) = ls.random_directions(model, n=1, norm="filter", seed=0)
    (layer,) = ls.random_directions(model, n=1, norm="layer", seed=0)
    (raw,) = ls.random_directions(model, n=1, norm=None, seed=0)
    for name, w in weights.items():
        w = w.detach()
        if w.dim() <= 1:
            assert not filt[name].any() and not layer[name].any()
            continue
        # one norm per filter: conv output channel, linear row, embedding row
        torch.testing.assert_close(
            filt[name].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-9, atol=0
        )
        torch.testing.assert_close(layer[name].norm(), w.norm(), rtol=1e-9, atol=0)
        # both are rescalings of the same Gaussian draw
        ratio = filt[name].flatten(1) / raw[name].flatten(1)
        torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12, atol=0)


def test_seeds_are_reproducible_and_distinct():
    model = CASES[0].build()[0]
    a = ls.random_directions(model, n=2, seed=4)
    b = ls.random_directions(model, n=2, seed=torch.Generator().manual_seed(4))
    c = ls.random_directions(model, n=2, seed=5)
    for x, y, z in zip(a, b, c):
        for k in x:
            assert torch.equal(x[k], y[k])
            assert x[k].dim() <= 1 or not torch.equal(x[k], z[k])


@pytest.mark.parametrize("which", ["cnn_batchnorm", "embedding"])
def test_orthogonal_directions_keep_their_norms(which):
    model = MODELS[which]()
    plain = ls.random_directions(model, n=2, seed=2)
    ortho = ls.random_directions(model, n=2, seed=2, orthogonal=True)
    for k in plain[0]:
        assert torch.equal(ortho[0][k], plain[0][k]) or torch.allclose(
            ortho[0][k], plain[0][k], rtol=1e-14, atol=0
        )
    for p, o in zip(plain, ortho):
        assert _dot(o, o) == pytest.approx(_dot(p, p), rel=1e-12)
    assert abs(_dot(ortho[0], ortho[1])) <= 1e-12 * _dot(plain[0], plain[0])
    assert abs(_dot(plain[0], plain[1])) > 1e-6 * _dot(plain[0], plain[0])  # not trivially true


def test_orthogonalize_rejects_dependent_directions():
    model = CASES[0].build()[0]
    (d,) = ls.random_directions(model, n=1, seed=0)
    with pytest.raises(ValueError, match="span"):
        ls.orthogonalize([d, {k: 2.0 * t for k, t in d.items()}])


def test_random_directions_reject_bad_options():
    model = CASES[0].build()[0]
    for kwargs in ({"norm": "dfilter"}, {"ignore": "bn"}, {"n": 0}):
        with pytest.raises(ValueError):
            ls.random_directions(model, **kwargs)


# -- 2. the grid against plain evaluation --------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_origin_is_the_eval_loss_and_the_model_is_untouched(case):
    model, batches = case.build()
    directions = ls.random_directions(model, n=2, seed=1)
    before = snapshot(model)
    coords = np.array([-0.5, 0.0, 0.5])
    s = ls.surface(
        model, batches, directions=directions, coords=coords, loss_fn=case.loss_fn, progress=False
    )
    assert_unchanged(model, before)
    expected = _eval_loss(case.oracle_loss, model, batches)
    assert s.origin_loss == pytest.approx(expected, rel=1e-12)
    assert s.loss[1, 1] == s.origin_loss
    # every grid point is the plain eval loss of the moved model
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            moved = _moved(model, directions, (a, b))
            assert s.loss[i, j] == pytest.approx(
                _eval_loss(case.oracle_loss, moved, batches), rel=1e-12
            ), (a, b)


def _recomputed(model, batches):
    """A copy whose BatchNorm running statistics are the cumulative average over the data."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    out.train()
    with torch.no_grad():
        for batch in batches:
            out(batch[0])
    return out.eval()


def _batch_statistics(model, batches):
    out = copy.deepcopy(model)
    out.bn.train()
    return out


@pytest.mark.parametrize(
    ("bn", "reference"), [("batch", _batch_statistics), ("recompute", _recomputed)]
)
def test_batchnorm_policies_against_plain_evaluation(bn, reference):
    model, batches = CASES[1].build()
    directions = ls.random_directions(model, n=2, seed=1)
    model.bn.train()  # a training-mode flag must survive too
    before = snapshot(model)
    coords = np.array([-0.5, 0.0, 0.5])
    s = ls.surface(model, batches, directions=directions, coords=coords, bn=bn, progress=False)
    assert_unchanged(model, before)
    model.bn.eval()
    base = reference(model, batches)
    assert s.origin_loss == pytest.approx(_eval_loss(_ce, base, batches), rel=1e-12)
    if bn == "batch":
        # each batch normalized by its own statistics, so not the eval-mode loss
        assert s.origin_loss != pytest.approx(_eval_loss(_ce, model, batches), rel=1e-6)
    for i, a in enumerate(coords):
        for j, b in enumerate(coords):
            moved = _moved(model, directions, (a, b))
            expected = _eval_loss(_ce, reference(moved, batches), batches)
            assert s.loss[i, j] == pytest.approx(expected, rel=1e-12), (a, b)


# -- 3. a quadratic with a closed form -----------------------------------------------------------
def _regression(N=37, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    model = nn.Linear(D, 1, bias=False).double()
    batches = [(X[:16], y[:16]), (X[16:32], y[16:32]), (X[32:], y[32:])]
    d1 = {"weight": torch.randn(1, D, generator=g, dtype=torch.float64)}
    d2 = {"weight": torch.randn(1, D, generator=g, dtype=torch.float64)}
    return model, batches, X.numpy(), y.numpy()[:, 0], d1, d2


def test_linear_regression_surface_is_the_exact_quadratic():
    model, batches, X, y, d1, d2 = _regression()
    coords = (np.linspace(-2.0, 2.0, 5), np.linspace(-1.5, 1.5, 7))
    s = ls.surface(
        model,
        batches,
        directions=[d1, d2],
        coords=coords,
        loss_fn=nn.MSELoss(),
        points_per_chunk=4,
        progress=False,
    )
    w0 = model.weight.detach().numpy()[0]
    r0, a1, a2 = X @ w0 - y, X @ d1["weight"].numpy()[0], X @ d2["weight"].numpy()[0]
    A, B = np.meshgrid(*coords, indexing="ij")
    exact = np.mean((r0 + A[..., None] * a1 + B[..., None] * a2) ** 2, axis=-1)
    assert s.loss.shape == (5, 7)
    np.testing.assert_allclose(s.loss, exact, rtol=1e-10, atol=0)
    assert s.accuracy is None and s.origin_accuracy is None  # regression
    assert s.origin_loss == pytest.approx(np.mean(r0**2), rel=1e-12)

    # the second difference of a quadratic is exact: d^T H d with H = 2 X^T X / N
    H_exact = 2.0 * X.T @ X / len(X)
    H = ls.hessian(model, batches, nn.MSELoss())
    for axis, d in enumerate((d1, d2)):
        dv = d["weight"].numpy()[0]
        assert s.curvature_at_origin(axis) == pytest.approx(dv @ H_exact @ dv, rel=1e-10)
        v = H.params_to_vector(d)
        assert float(v @ (H @ v)) == pytest.approx(dv @ H_exact @ dv, rel=1e-12)


def test_curvature_needs_a_symmetric_stencil():
    model, batches, *_, d1, _ = _regression()
    s = ls.surface(
        model, batches, directions=d1, coords=[-1.0, 0.0, 0.5], loss_fn=nn.MSELoss(), progress=False
    )
    with pytest.raises(ValueError, match="-h, 0, h"):
        s.curvature_at_origin()
    s = ls.surface(
        model, batches, directions=d1, coords=[0.0, 1.0], loss_fn=nn.MSELoss(), progress=False
    )
    with pytest.raises(ValueError, match="-h, 0, h"):
        s.curvature_at_origin()


# -- 4. vectorization, shapes, accuracy, Surface helpers -----------------------------------------
@pytest.mark.parametrize("case", [CASES[3], CASES[5]], ids=[CASES[3].id, CASES[5].id])
def test_chunking_does_not_change_the_result(case):
    model, batches = case.build()
    d1, d2 = ls.random_directions(model, n=2, seed=6)
    kw = {"loss_fn": case.loss_fn, "progress": False}
    coords = np.linspace(-1.0, 1.0, 5)
    one = ls.surface(model, batches, directions=[d1, d2], coords=coords, points_per_chunk=1, **kw)
    seven = ls.surface(model, batches, directions=[d1, d2], coords=coords, points_per_chunk=7, **kw)
    assert one.loss.shape == (5, 5) and one.ndim == 2
    np.testing.assert_allclose(one.loss, seven.loss, rtol=1e-12, atol=0)
    np.testing.assert_allclose(one.accuracy, seven.accuracy, rtol=0, atol=1e-12)
    line1 = ls.surface(
        model, batches, directions=d1, coords=np.linspace(-1, 1, 7), points_per_chunk=1, **kw
    )
    line7 = ls.surface(
        model, batches, directions=[d1], coords=np.linspace(-1, 1, 7), points_per_chunk=7, **kw
    )
    assert line1.loss.shape == (7,) and line1.ndim == 1
    np.testing.assert_allclose(line1.loss, line7.loss, rtol=1e-12, atol=0)
    # the 1-D line along d1 at -1, 0, 1 is the 2-D grid's column at d2-coordinate 0
    np.testing.assert_allclose(line1.loss[[0, 3, 6]], one.loss[[0, 2, 4], 2], rtol=1e-12)


def test_accuracy_for_classification_only():
    model, batches = CASES[0].build()
    d = ls.random_directions(model, n=2, seed=0)
    s = ls.surface(model, batches, directions=d, coords=[-1.0, 0.0, 1.0], progress=False)
    with torch.no_grad():
        X, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        accuracy = float((model(X).argmax(1) == y).double().mean())
    assert s.origin_accuracy == pytest.approx(accuracy, abs=1e-15)
    assert s.accuracy.shape == (3, 3) and s.accuracy[1, 1] == s.origin_accuracy
    assert np.all((s.accuracy >= 0) & (s.accuracy <= 1))
    only_loss = ls.surface(
        model, batches, directions=d, coords=[-1.0, 0.0, 1.0], metrics=["loss"], progress=False
    )
    assert only_loss.accuracy is None and only_loss.origin_accuracy is None
    np.testing.assert_array_equal(only_loss.loss, s.loss)

    model, batches = CASES[2].build()  # regression with MSE
    d = ls.random_directions(model, n=1, seed=0)
    s = ls.surface(
        model, batches, directions=d, coords=[-1.0, 0.0, 1.0], loss_fn=nn.MSELoss(), progress=False
    )
    assert s.accuracy is None and s.origin_accuracy is None


def test_origin_outside_the_grid_is_still_exact():
    model, batches = CASES[0].build()
    d = ls.random_directions(model, n=2, seed=0)
    s = ls.surface(
        model,
        batches,
        directions=d,
        coords=(np.array([0.5, 1.0]), np.array([-1.0])),
        progress=False,
    )
    assert s.loss.shape == (2, 1)
    assert s.origin_loss == pytest.approx(_eval_loss(_ce, model, batches), rel=1e-12)
    # coordinates within 1e-12 of zero are snapped to the exact origin
    s = ls.surface(model, batches, directions=d[0], coords=[-1e-14, 1.0], progress=False)
    assert s.coords[0][0] == 0.0 and s.loss[0] == s.origin_loss


def _hand_made(coords, loss, origin_loss=0.0):
    return ls.Surface(
        coords=tuple(np.asarray(c, dtype=float) for c in coords),
        loss=np.asarray(loss, dtype=float),
        accuracy=None,
        origin_loss=origin_loss,
        origin_accuracy=None,
        settings={},
    )


def test_width_on_hand_made_lines():
    t = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    s = _hand_made([t], [5.0, 0.5, 0.0, 0.2, 3.0, 0.1])
    assert s.width(1.0) == 4.0  # first points beyond the threshold: -2 and 2 (3 dips back)
    assert s.width(0.3) == 3.0  # -1 and 2
    assert s.width(0.1) == 2.0  # -1 and 1
    assert s.width(10.0) == 5.0  # never exceeded: the grid ends (a lower bound)
    # relative to origin_loss, not to zero
    assert _hand_made([t], [5.0, 1.5, 1.0, 1.2, 4.0, 1.1], origin_loss=1.0).width(1.0) == 4.0
    # 2-D: the line through the origin along each axis
    x, y = [-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0, 4.0]
    grid = np.array([[9, 2, 9, 9], [5, 0, 0.5, 5], [9, 2, 9, 9]], dtype=float)
    s = _hand_made([x, y], grid)
    assert s.width(1.0, axis=0) == 2.0  # grid[:, 1] = 2, 0, 2
    assert s.width(1.0, axis=1) == 6.0  # grid[1, :] = 5, 0, 0.5, 5: -2 and 4
    assert s.width(3.0, axis=0) == 2.0  # never exceeded on [-1, 1]
    with pytest.raises(ValueError, match="coordinate 0"):
        _hand_made([x, [1.0, 2.0]], np.zeros((3, 2))).width(1.0)


def test_barrier_on_hand_made_paths():
    t = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
    # linear interpolation of the ends is 1 + 2t: 1.5, 2, 2.5 inside; outside [0, 1] ignored
    s = _hand_made([t], [9.0, 1.0, 2.5, 2.0, 1.5, 3.0, 9.0])
    assert s.barrier() == pytest.approx(1.0, abs=1e-15)
    s = _hand_made([t], [9.0, 1.0, 1.4, 1.9, 2.2, 3.0, 9.0])
    assert s.barrier() == pytest.approx(0.0, abs=1e-15)  # the endpoints themselves give 0
    with pytest.raises(ValueError, match="t = 0 and t = 1"):
        _hand_made([[0.0, 0.5, 0.9]], [1.0, 2.0, 3.0]).barrier()
    with pytest.raises(ValueError, match="1-D"):
        _hand_made([[0.0, 1.0], [0.0, 1.0]], np.zeros((2, 2))).barrier()


def test_surface_rejects_bad_inputs():
    model, batches = CASES[0].build()
    d = ls.random_directions(model, n=3, seed=0)
    kw = {"progress": False}
    with pytest.raises(ValueError, match="1 or 2 directions"):
        ls.surface(model, batches, directions=d, coords=[0.0, 1.0], **kw)
    with pytest.raises(ValueError, match="shape"):
        bad = {**d[0], "net.0.weight": torch.zeros(2, 2, dtype=torch.float64)}
        ls.surface(model, batches, directions=bad, coords=[0.0, 1.0], **kw)
    with pytest.raises(ValueError, match="not trainable"):
        ls.surface(
            model, batches, directions={**d[0], "nope": torch.ones(1)}, coords=[0.0, 1.0], **kw
        )
    with pytest.raises(ValueError, match="bn"):
        ls.surface(model, batches, directions=d[0], coords=[0.0, 1.0], bn="train", **kw)
    with pytest.raises(ValueError, match="coordinate arrays"):
        ls.surface(model, batches, directions=d[0], coords=([0.0], [1.0]), **kw)
    with pytest.raises(ValueError, match="empty"):
        ls.surface(model, batches, directions=d[0], coords=[], **kw)
    with pytest.raises(ValueError, match="metrics"):
        ls.surface(model, batches, directions=d[0], coords=[0.0], metrics=["accuracy"], **kw)


# -- 5. paths and planes -------------------------------------------------------------------------
def _interpolated(a, b, t):
    """theta_a + t (theta_b - theta_a), floating buffers too (BatchNorm statistics)."""
    out = copy.deepcopy(a)
    other = {**dict(b.named_parameters()), **dict(b.named_buffers())}
    with torch.no_grad():
        for name, x in [*out.named_parameters(), *out.named_buffers()]:
            if x.is_floating_point():
                x.copy_(x + t * (other[name] - x))
    return out


def test_interpolate_endpoints_and_path_with_batchnorm():
    a, batches = CASES[1].build(seed=0)
    b, _ = CASES[1].build(seed=1)
    assert not torch.equal(a.bn.running_mean, b.bn.running_mean)
    assert not torch.equal(a.bn.running_var, b.bn.running_var)
    before_a, before_b = snapshot(a), snapshot(b)
    s = ls.interpolate(a, b, batches, num=5, extend=0.5, progress=False)
    assert_unchanged(a, before_a)
    assert_unchanged(b, before_b)
    t = s.coords[0]
    np.testing.assert_allclose(t, np.arange(-2, 7) / 4, rtol=0, atol=1e-15)
    assert np.count_nonzero(t == 0.0) == 1 and np.count_nonzero(t == 1.0) == 1
    assert s.loss[t == 0.0][0] == pytest.approx(_eval_loss(_ce, a, batches), rel=1e-10)
    assert s.loss[t == 1.0][0] == pytest.approx(_eval_loss(_ce, b, batches), rel=1e-10)
    assert s.origin_loss == s.loss[t == 0.0][0]
    # inside [0, 1] (beyond it the extrapolated running variances may turn negative)
    for ti, li in zip(t, s.loss):
        if 0 <= ti <= 1:
            expected = _eval_loss(_ce, _interpolated(a, b, ti), batches)
            assert li == pytest.approx(expected, rel=1e-12), ti


def test_interpolate_between_the_same_model_is_flat():
    a, batches = CASES[0].build()
    s = ls.interpolate(a, copy.deepcopy(a), batches, num=3, extend=0.0, progress=False)
    np.testing.assert_array_equal(s.coords[0], [0.0, 0.5, 1.0])
    assert np.all(s.loss == s.origin_loss) and s.barrier() == 0.0


def test_no_barrier_on_a_convex_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    with torch.no_grad():
        b.weight.mul_(5.0)  # a far-away second model: a strongly curved path
    s = ls.interpolate(a, b, [(X[:16], y[:16]), (X[16:], y[16:])], num=9, progress=False)
    assert s.loss.max() > s.loss.min() + 0.5  # not flat
    assert s.barrier() <= 1e-12  # softmax regression: cross-entropy is convex in the weights


def test_barrier_between_permuted_networks():
    # Two tanh MLPs computing the same function (hidden units permuted): both have zero loss
    # on targets made by the first, while their average is a different function.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    b = copy.deepcopy(a)
    with torch.no_grad():
        Y = a(X)
        b[0].weight.copy_(a[0].weight[perm])
        b[0].bias.copy_(a[0].bias[perm])
        b[2].weight.copy_(a[2].weight[:, perm])
        assert torch.allclose(b(X), Y, rtol=0, atol=1e-14)
    batches = [(X[:16], Y[:16]), (X[16:], Y[16:])]
    s = ls.interpolate(a, b, batches, num=5, extend=0.5, progress=False)
    t = s.coords[0]
    assert s.loss[t == 0.0][0] < 1e-28
    assert s.loss[t == 1.0][0] < 1e-28
    assert s.barrier() > 1e-3
    assert s.barrier() == pytest.approx(s.loss[(t > 0) & (t < 1)].max(), rel=1e-12)
    assert s.loss[t == 0.5][0] == pytest.approx(
        _eval_loss(_mse, _interpolated(a, b, 0.5), batches), rel=1e-12
    )


def test_interpolate_rejects_bad_arguments():
    a, batches = CASES[0].build()
    other = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with pytest.raises(ValueError, match="architecture"):
        ls.interpolate(a, other, batches, num=3, progress=False)
    with pytest.raises(ValueError, match="num"):
        ls.interpolate(a, a, batches, num=1, progress=False)
    with pytest.raises(ValueError, match="extend"):
        ls.interpolate(a, a, batches, num=3, extend=-0.1, progress=False)


def _plane_geometry(a, b, c):
    """(|u|, v.u/|u|, |v - (v.e1) e1|) for u = b - a, v = c - a, computed independently."""
    pa, pb, pc = (torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    u, v = (pb - pa).numpy(), (pc - pa).numpy()
    norm_u = np.linalg.norm(u)
    v1 = v @ u / norm_u
    return norm_u, v1, np.linalg.norm(v - v1 * u / norm_u)


def test_plane_through_three_models(tmp_path):
    import h5py

    a, batches = CASES[0].build(seed=0)
    b, _ = CASES[0].build(seed=1)
    c, _ = CASES[0].build(seed=2)
    before = [snapshot(m) for m in (a, b, c)]
    path = tmp_path / "plane.h5"
    s = ls.plane(a, b, c, batches, num=5, path=path, progress=False)
    for m, snap in zip((a, b, c), before):
        assert_unchanged(m, snap)
    norm_u, v1, v2 = _plane_geometry(a, b, c)
    np.testing.assert_allclose(
        s.settings["model_coords"], [[0, 0], [norm_u, 0], [v1, v2]], rtol=1e-12, atol=1e-14
    )
    assert s.loss.shape == (5, 5)
    for axis in s.coords:  # the bounding box of the three models, 20% margin
        assert axis.size == 5 and axis[0] < axis[-1]
    lo, hi = min(0.0, norm_u, v1), max(0.0, norm_u, v1)
    assert s.coords[0][0] == pytest.approx(lo - 0.2 * (hi - lo), rel=1e-12)
    assert s.coords[0][-1] == pytest.approx(hi + 0.2 * (hi - lo), rel=1e-12)
    assert s.coords[1][0] == pytest.approx(-0.2 * v2) and s.coords[1][-1] == pytest.approx(1.2 * v2)
    with h5py.File(path, "r") as f:
        axes = [
            {k: torch.from_numpy(f[f"directions/{i}/{k}"][...]) for k in f[f"directions/{i}"]}
            for i in range(2)
        ]
    assert _dot(axes[0], axes[0]) == pytest.approx(1.0, rel=1e-12)
    assert _dot(axes[1], axes[1]) == pytest.approx(1.0, rel=1e-12)
    assert abs(_dot(axes[0], axes[1])) < 1e-12
    # each model sits at its coordinates: one-point surfaces along the plane's axes
    for (x, y), m in zip(s.settings["model_coords"], (a, b, c)):
        point = ls.surface(
            a, batches, directions=axes, coords=(np.array([x]), np.array([y])), progress=False
        )
        assert point.loss[0, 0] == pytest.approx(_eval_loss(_ce, m, batches), rel=1e-10)
    # and the plane is the surface along those axes
    again = ls.surface(a, batches, directions=axes, coords=s.coords, progress=False)
    np.testing.assert_allclose(again.loss, s.loss, rtol=1e-12, atol=0)


def test_plane_models_on_the_grid_with_batchnorm():
    # margin 0 and 2 points per axis: with v.e1 < 0 the grid corners (|u|, 0) and (v1, v2)
    # are models b and c exactly, and model a is the origin.
    a, batches = CASES[1].build(seed=0)
    b, _ = CASES[1].build(seed=1)
    c, _ = CASES[1].build(seed=2)  # its own BatchNorm statistics
    with torch.no_grad():
        for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
            pc.copy_(pa - (pb - pa) + 0.5 * (pc - pa))
    norm_u, v1, v2 = _plane_geometry(a, b, c)
    assert v1 < 0
    s = ls.plane(a, b, c, batches, num=2, margin=0.0, progress=False)
    (_, _), (x_b, y_b), (x_c, y_c) = s.settings["model_coords"]
    np.testing.assert_allclose([x_b, x_c, y_c], [norm_u, v1, v2], rtol=1e-12)
    np.testing.assert_array_equal(s.coords[0], [x_c, x_b])
    np.testing.assert_array_equal(s.coords[1], [y_b, y_c])
    assert s.origin_loss == pytest.approx(_eval_loss(_ce, a, batches), rel=1e-12)
    assert s.loss[1, 0] == pytest.approx(_eval_loss(_ce, b, batches), rel=1e-10)
    assert s.loss[0, 1] == pytest.approx(_eval_loss(_ce, c, batches), rel=1e-10)


def test_plane_rejects_collinear_models_and_other_architectures():
    a, batches = CASES[0].build(seed=0)
    b, _ = CASES[0].build(seed=1)
    between = _interpolated(a, b, 0.3)
    with pytest.raises(ValueError, match="collinear"):
        ls.plane(a, b, between, batches, num=3, progress=False)
    with pytest.raises(ValueError, match="identical"):
        ls.plane(a, copy.deepcopy(a), b, batches, num=3, progress=False)
    other = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with pytest.raises(ValueError, match="architecture"):
        ls.plane(a, b, other, batches, num=3, progress=False)
    with pytest.raises(ValueError, match="architecture"):
        ls.plane(a, CASES[2].build()[0], b, batches, num=3, progress=False)


# -- 6. Hessian axes -----------------------------------------------------------------------------
def test_hessian_directions_are_orthonormal_eigenvectors():
    model, batches = CASES[0].build()
    before = snapshot(model)
    dirs = ls.hessian_directions(model, batches, k=2, tol=1e-8)
    assert_unchanged(model, before)
    assert len(dirs) == 2 and all(list(d) == _trainable_names(model) for d in dirs)
    gram = np.array([[_dot(x, y) for y in dirs] for x in dirs])
    np.testing.assert_allclose(gram, np.eye(2), rtol=0, atol=1e-10)
    H = ls.hessian(model, batches)
    top = [float(H.params_to_vector(d) @ (H @ H.params_to_vector(d))) for d in dirs]
    assert top[0] >= top[1] > 0
    # along an eigenvector the surface's curvature at 0 is its eigenvalue
    for d, eigenvalue in zip(dirs, top):
        s = ls.surface(model, batches, directions=d, coords=[-1e-3, 0.0, 1e-3], progress=False)
        assert s.curvature_at_origin() == pytest.approx(eigenvalue, rel=1e-4)
    # and it is the top of the spectrum
    ev = ls.eigenvalues(H, k=1, tol=1e-10)
    assert top[0] == pytest.approx(float(ev.values[0]), rel=1e-8)


# -- 7. trajectories -----------------------------------------------------------------------------
def _sgd_checkpoints(steps=5):
    model, batches = CASES[0].build()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    checkpoints = [copy.deepcopy(model.state_dict())]
    for step in range(steps):
        optimizer.zero_grad()
        _ce(model, batches[step % len(batches)]).backward()
        optimizer.step()
        checkpoints.append(copy.deepcopy(model.state_dict()))
    model.eval()
    return model, batches, checkpoints


def test_trajectory_directions_are_the_principal_components():
    model, batches, checkpoints = _sgd_checkpoints()
    dirs = ls.trajectory_directions(checkpoints, n=2)
    assert all(list(d) == [n for n, _ in model.named_parameters()] for d in dirs)
    gram = np.array([[_dot(x, y) for y in dirs] for x in dirs])
    np.testing.assert_allclose(gram, np.eye(2), rtol=0, atol=1e-12)
    for d in dirs:  # ignore="biasbn": biases are left out
        assert not d["net.0.bias"].any() and not d["net.2.bias"].any()
    # against PCA of the weight matrices' trajectory, written out with numpy
    names = ["net.0.weight", "net.2.weight"]
    flat = np.stack([np.concatenate([c[k].numpy().ravel() for k in names]) for c in checkpoints])
    M = flat[:-1] - flat[-1]
    _, S, Vt = np.linalg.svd(M - M.mean(0), full_matrices=False)
    assert S[1] > 1e-3 * S[0]
    for i, d in enumerate(dirs):
        mine = np.concatenate([d[k].numpy().ravel() for k in names])
        assert abs(mine @ Vt[i]) == pytest.approx(1.0, abs=1e-10)

    coords = ls.project_trajectory(checkpoints, dirs)
    assert coords.shape == (len(checkpoints), 2) and coords.dtype == torch.float64
    assert torch.equal(coords[-1], torch.zeros(2, dtype=torch.float64))
    for c, checkpoint in zip(coords, checkpoints):  # coordinates are plain dot products
        delta = {k: checkpoint[k] - checkpoints[-1][k] for k in dirs[0]}
        np.testing.assert_allclose(c.numpy(), [_dot(delta, d) for d in dirs], atol=1e-12)
    # modules work as checkpoints too, and the surface around the last one accepts the axes
    assert torch.allclose(ls.project_trajectory([*checkpoints[:-1], model], dirs), coords)
    s = ls.surface(model, batches, directions=dirs, coords=[-1.0, 0.0, 1.0], progress=False)
    assert s.origin_loss == pytest.approx(_eval_loss(_ce, model, batches), rel=1e-12)


def test_trajectory_needs_enough_checkpoints():
    _, _, checkpoints = _sgd_checkpoints(steps=2)
    with pytest.raises(ValueError, match="at least"):
        ls.trajectory_directions(checkpoints[:2], n=2)
    assert len(ls.trajectory_directions(checkpoints, n=2)) == 2


def test_points_per_chunk_must_be_positive():
    model, batches = CASES[0].build()
    with pytest.raises(ValueError, match="points_per_chunk"):
        ls.surface(
            model,
            batches,
            directions=ls.random_directions(model, n=1),
            coords=[0.0],
            points_per_chunk=0,
            progress=False,
        )


def test_extrapolated_running_variances_stay_valid():
    case = CASES[1]
    a, batches = case.build(seed=0)
    b, _ = case.build(seed=1)
    a.bn.running_var.fill_(0.05)
    b.bn.running_var.fill_(1.0)
    path = ls.interpolate(a, b, batches, num=5, extend=0.5, progress=False)
    assert np.isfinite(path.loss).all()


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[4], CASES[5]], ids=lambda c: c.id)
def test_vectorized_and_point_loop_agree(case):
    model, batches = case.build()
    before = snapshot(model)
    dirs = ls.random_directions(model, n=2, seed=2)
    coords = np.linspace(-0.5, 0.5, 3)
    kw = {"loss_fn": case.loss_fn, "progress": False, "points_per_chunk": 4}
    looped = ls.surface(model, batches, directions=dirs, coords=coords, vectorize=False, **kw)
    batched = ls.surface(model, batches, directions=dirs, coords=coords, vectorize=True, **kw)
    np.testing.assert_allclose(looped.loss, batched.loss, rtol=1e-12)
    assert looped.settings["vectorize"] is False and batched.settings["vectorize"] is True
    assert_unchanged(model, before)
