"""Software renderer: pixel placement, depth order, culling, views and keypoints."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from recon.render import LEFT_COLOR, RIGHT_COLOR, draw_keypoints, render_meshes, render_views

K = np.array([[500.0, 0.0, 100.0], [0.0, 500.0, 80.0], [0.0, 0.0, 1.0]])
SIZE = (200, 160)  # (W, H)
# A triangle 1 m in front of the camera whose outward normal ((v1-v0) x (v2-v0)) faces the camera.
TRI = np.array([[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0]])
FACE = np.array([[0, 2, 1]])


def test_triangle_lands_where_projected() -> None:
    img = render_meshes(None, [TRI], FACE, K, colors=[(255, 0, 0)], alpha=1.0, size=SIZE,
                        background=(0, 0, 0), cull_backfaces=True)  # fmt: skip
    assert img.shape == (160, 200, 3) and img.dtype == np.uint8
    # Projections: (50, 30), (150, 30), (100, 130); centroid (100, 63.3).
    inside = img[63, 100]
    assert inside[0] > 200 and inside[1] == 0 and inside[2] == 0  # head-on: full Lambert
    for x, y in [(40, 30), (160, 30), (100, 140), (60, 110), (140, 110), (100, 20)]:
        assert img[y, x].sum() == 0, (x, y)
    mask = img.sum(-1) > 0
    area = mask.sum()
    assert abs(area - 0.5 * 100 * 100) < 0.05 * 5000  # analytic area 5000 px^2
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 50) <= 1 and abs(xs.max() - 150) <= 1
    assert abs(ys.min() - 30) <= 1 and abs(ys.max() - 130) <= 1


def test_backface_culling_and_behind_camera() -> None:
    reversed_face = FACE[:, ::-1].copy()
    culled = render_meshes(None, [TRI], reversed_face, K, alpha=1.0, size=SIZE, background=(0, 0, 0))
    assert culled.sum() == 0
    both = render_meshes(None, [TRI], reversed_face, K, alpha=1.0, size=SIZE, background=(0, 0, 0),
                         cull_backfaces=False)  # fmt: skip
    assert both.sum() > 0
    behind = render_meshes(None, [TRI * [1, 1, -1]], FACE, K, alpha=1.0, size=SIZE, background=(0, 0, 0),
                           cull_backfaces=False)  # fmt: skip
    assert behind.sum() == 0


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_nearer_mesh_wins(order: tuple[int, int]) -> None:
    near = TRI.copy()
    far = TRI * [1.5, 1.5, 1.0] + [0, 0, 0.5]  # same projection (bigger, further), behind `near`
    meshes = [near, far]
    colors = [(0, 255, 0), (0, 0, 255)]
    img = render_meshes(None, [meshes[i] for i in order], FACE, K, colors=[colors[i] for i in order],
                        alpha=1.0, size=SIZE, background=(0, 0, 0))  # fmt: skip
    px = img[63, 100]
    assert px[1] > 200 and px[2] == 0


def test_alpha_blends_over_image() -> None:
    base = np.full((160, 200, 3), 100, np.uint8)
    img = render_meshes(base, [TRI], FACE, K, colors=[(200, 200, 200)], alpha=0.5)
    assert np.allclose(img[63, 100], 150, atol=2)
    assert (img[5, 5] == 100).all()
    assert (base == 100).all()  # input untouched


def test_views_and_keypoints() -> None:
    import trimesh

    ball = trimesh.creation.icosphere(2, radius=0.03)
    v, f = np.asarray(ball.vertices), np.asarray(ball.faces)
    left, right = v + [-0.1, 0.0, 0.5], v + [0.1, 0.0, 0.6]
    views = render_views([left, right], f, size=120)
    assert views.shape == (120, 360, 3)

    def colour_columns(panel: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
        close = np.abs(panel.astype(int) - color).sum(-1) < 150
        return np.nonzero(close.any(0))[0]

    front, side, top = views[:, :120], views[:, 120:240], views[:, 240:]
    # Front: left ball on the left. Side (from +x): the nearer (left, z=0.5) ball on the left.
    assert colour_columns(front, LEFT_COLOR).mean() < colour_columns(front, RIGHT_COLOR).mean()
    assert colour_columns(side, LEFT_COLOR).mean() < colour_columns(side, RIGHT_COLOR).mean()
    assert colour_columns(top, LEFT_COLOR).mean() < colour_columns(top, RIGHT_COLOR).mean()
    kps = np.stack([np.linspace(20, 180, 21), np.linspace(20, 140, 21)], 1)
    out = draw_keypoints(np.zeros((160, 200, 3), np.uint8), kps, np.ones(21), (0, 255, 0), radius=3)
    assert out[20, 20, 1] > 150 and out[140, 180, 1] > 150
    with pytest.raises(ValueError, match="21, 2"):
        draw_keypoints(out, kps[:5])


def test_two_hands_fast_enough(mano) -> None:
    from prior.hands import TwoHands

    h = TwoHands.zeros(1)
    transl = torch.tensor([[[0.08, 0.0, 0.5], [-0.08, 0.0, 0.5]]])
    with torch.no_grad():
        m = mano(TwoHands(h.pose_aa, h.betas, h.rot_mat, transl))
    verts, faces = m.verts[0].numpy(), m.faces.numpy()
    Kh = np.array([[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]])
    img = np.full((800, 1000, 3), 90, np.uint8)
    render_meshes(img, list(verts), list(faces), Kh)  # warm-up
    t = time.perf_counter()
    out = render_meshes(img, list(verts), list(faces), Kh)
    dt = time.perf_counter() - t
    assert (out != 90).any(axis=-1).sum() > 5000  # hands cover a real area
    assert dt < 0.5, f"rendering two hands at 1000 px took {dt * 1000:.0f} ms"
