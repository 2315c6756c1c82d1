"""Software rendering for overlays and previews: a depth-sorted OpenCV polygon painter.

No GL context is needed (design Decision 8). All triangles of all meshes are projected, sorted
far to near by their mean depth and filled one by one with ``cv2.fillPoly`` (sub-pixel
coordinates), shaded with Lambert's law under a head light (a light at the eye). This is
exact for convex, non-intersecting surfaces and a good approximation for hands; where two
surfaces interpenetrate the painter's order can be wrong by one triangle.

Images are RGB uint8 throughout. The left hand is always drawn in :data:`LEFT_COLOR` and the
right hand in :data:`RIGHT_COLOR` (index 0 = left, 1 = right, as in ``prior.hands``).
Faces are wound counter-clockwise seen from outside (MANO's convention, positive volume), so
the outward normal is ``(v1 - v0) x (v2 - v0)``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = [
    "LEFT_COLOR", "RIGHT_COLOR", "SIDE_COLORS", "MEDIAPIPE_BONES", "render_meshes",
    "draw_keypoints", "render_views",
]  # fmt: skip

LEFT_COLOR = (90, 150, 235)  # RGB, blue
RIGHT_COLOR = (240, 150, 90)  # RGB, orange
SIDE_COLORS = (LEFT_COLOR, RIGHT_COLOR)
MEDIAPIPE_BONES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
    (19, 20),
)  # fmt: skip
NEAR = 1e-3  # m; faces with a vertex closer than this (or behind the camera) are skipped
AMBIENT = 0.3
_SHIFT = 4  # fillPoly sub-pixel bits
_ONE = 1 << _SHIFT


def _as_list(verts: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(verts, np.ndarray) and verts.ndim == 2:
        return [np.asarray(verts, dtype=np.float64)]
    return [np.asarray(v, dtype=np.float64) for v in verts]


def _triangles(
    verts: list[np.ndarray],
    faces: np.ndarray | Sequence[np.ndarray],
    colors: Sequence[Sequence[float]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stack triangles of all meshes: (T, 3, 3) corners and (T, 3) float RGB colours."""
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        faces = [faces] * len(verts)
    if len(faces) != len(verts):
        raise ValueError(f"got {len(verts)} meshes but {len(faces)} face arrays")
    if colors is None:
        colors = [SIDE_COLORS[i % 2] for i in range(len(verts))]
    if len(colors) != len(verts):
        raise ValueError(f"got {len(verts)} meshes but {len(colors)} colours")
    tris, cols = [], []
    for v, f, c in zip(verts, faces, colors):
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"mesh vertices must have shape (V, 3), got {v.shape}")
        f = np.asarray(f, dtype=np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
        tris.append(v[f])
        cols.append(np.broadcast_to(np.asarray(c, dtype=np.float64), (len(f), 3)))
    if not tris:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    return np.concatenate(tris), np.concatenate(cols)


def _paint(
    canvas: np.ndarray,
    mask: np.ndarray,
    pts: np.ndarray,
    depth: np.ndarray,
    shade: np.ndarray,
    colors: np.ndarray,
) -> None:
    """Fill triangles far to near. pts (T, 3, 2) px, depth (T,), shade (T,), colors (T, 3)."""
    if len(pts) == 0:
        return
    h, w = canvas.shape[:2]
    fixed = np.round(pts * _ONE).astype(np.int64)
    # Skip triangles entirely outside the canvas or absurdly far off (int32 overflow in cv2).
    lo, hi = fixed.min(1), fixed.max(1)
    keep = (hi[:, 0] >= 0) & (hi[:, 1] >= 0) & (lo[:, 0] < w * _ONE) & (lo[:, 1] < h * _ONE)
    keep &= (np.abs(fixed) < 2**30).all(axis=(1, 2))
    order = np.argsort(-depth[keep], kind="stable")
    fixed = fixed[keep][order].astype(np.int32)
    rgb = np.clip(colors[keep][order] * shade[keep][order, None], 0, 255).round().astype(int)
    for tri, c in zip(fixed, rgb.tolist()):
        cv2.fillPoly(canvas, [tri], c, lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(mask, [tri], 255, lineType=cv2.LINE_8, shift=_SHIFT)


def _shade(normals: np.ndarray, to_eye: np.ndarray, cull: bool) -> tuple[np.ndarray, np.ndarray]:
    """Lambert under a head light: (T,) shade factor and (T,) keep mask (back faces culled)."""
    n = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
    e = to_eye / np.maximum(np.linalg.norm(to_eye, axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("td,td->t", n, e)
    keep = cos > 0 if cull else np.ones(len(cos), dtype=bool)
    return AMBIENT + (1.0 - AMBIENT) * np.abs(cos), keep


def _blend(base: np.ndarray, canvas: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha`` * canvas over base where mask is set; only the mask's bounding box is touched."""
    out = base.copy()
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return out
    roi = (slice(y, y + h), slice(x, x + w))
    mixed = cv2.addWeighted(base[roi], 1.0 - alpha, canvas[roi], alpha, 0.0)
    out[roi] = np.where(mask[roi][..., None] > 0, mixed, base[roi])
    return out


def render_meshes(
    image: np.ndarray | None,
    verts: np.ndarray | Sequence[np.ndarray],
    faces: np.ndarray | Sequence[np.ndarray],
    K: np.ndarray,
    colors: Sequence[Sequence[float]] | None = None,
    alpha: float = 0.85,
    size: tuple[int, int] | None = None,
    cull_backfaces: bool = True,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Paint shaded meshes seen by a pinhole camera over an image.

    Args:
        image: (H, W, 3) uint8 RGB to draw over, or None for a plain ``background``.
        verts: one (V, 3) array per mesh (or a single (V, 3) array), camera frame (OpenCV), metres.
        faces: (F, 3) shared by all meshes, or one (F_i, 3) array per mesh.
        K: (3, 3) intrinsics.
        colors: RGB per mesh (0-255); default left/right colours by mesh index.
        alpha: opacity of the meshes over the image.
        size: (W, H) of the output when ``image`` is None.
        cull_backfaces: skip faces whose outward normal points away from the camera (set False
            for open or inconsistently wound meshes).
        background: RGB of the plain background when ``image`` is None.
    Returns:
        (H, W, 3) uint8 RGB.
    """
    if image is None:
        if size is None:
            raise ValueError("render_meshes needs an image or a size=(W, H)")
        image = np.empty((size[1], size[0], 3), np.uint8)
        image[:] = background
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    tris, cols = _triangles(_as_list(verts), faces, colors)
    front = (tris[..., 2] > NEAR).all(axis=1) & np.isfinite(tris).all(axis=(1, 2))
    tris, cols = tris[front], cols[front]
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    shade, keep = _shade(normals, -tris.mean(1), cull_backfaces)
    tris, cols, shade = tris[keep], cols[keep], shade[keep]
    uvw = tris @ K.T
    pts = uvw[..., :2] / uvw[..., 2:3]
    canvas = image.copy()
    mask = np.zeros(image.shape[:2], np.uint8)
    _paint(canvas, mask, pts, tris[..., 2].mean(1), shade, cols)
    return _blend(image, canvas, mask, alpha)


def draw_keypoints(
    image: np.ndarray,
    kps: np.ndarray,
    conf: np.ndarray | None = None,
    color: Sequence[int] = (0, 255, 0),
    min_conf: float = 0.05,
    radius: int | None = None,
) -> np.ndarray:
    """Draw 21 MediaPipe-order keypoints and their bones on a copy of ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        kps: (21, 2) px.
        conf: (21,) confidences; points below ``min_conf`` are skipped, points below 0.5 are
            drawn hollow.
        color: RGB.
        radius: point radius in px (default scales with the image size).
    Returns:
        (H, W, 3) uint8 RGB copy.
    """
    out = image.copy()
    kps = np.asarray(kps, dtype=np.float64)
    if kps.shape != (21, 2):
        raise ValueError(f"keypoints must have shape (21, 2), got {kps.shape}")
    conf = np.ones(21) if conf is None else np.asarray(conf, dtype=np.float64)
    ok = (conf >= min_conf) & np.isfinite(kps).all(1)
    if radius is None:
        radius = max(2, round(max(image.shape[:2]) / 300))
    thick = max(1, radius // 2)
    color = tuple(int(c) for c in color)
    p = np.round(np.clip(kps, -1e5, 1e5) * _ONE).astype(np.int32)
    for a, b in MEDIAPIPE_BONES:
        if ok[a] and ok[b]:
            cv2.line(out, tuple(p[a]), tuple(p[b]), color, thick, cv2.LINE_AA, _SHIFT)
    for i in np.flatnonzero(ok):
        filled = -1 if conf[i] >= 0.5 else thick
        cv2.circle(out, tuple(p[i]), radius * _ONE, color, filled, cv2.LINE_AA, _SHIFT)
        cv2.circle(out, tuple(p[i]), radius * _ONE, (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return out


_VIEWS = (  # name, rotation taking camera-frame offsets to the view frame (x right, y down, z in)
    ("front", np.eye(3)),
    ("side (from the right)", np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])),
    ("top", np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])),
)


def render_views(
    verts: np.ndarray | Sequence[np.ndarray],
    faces: np.ndarray | Sequence[np.ndarray],
    colors: Sequence[Sequence[float]] | None = None,
    size: int = 400,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """The meshes from the front (the camera's view), the right side and the top.

    Orthographic views around the centroid of all vertices, one scale for all panels so that
    distances compare across views.

    Args:
        verts: one (V, 3) array per mesh, camera frame, metres.
        faces: (F, 3) shared, or one array per mesh.
        colors: RGB per mesh; default left/right colours by mesh index.
        size: side of each square panel, px.
        background: RGB.
    Returns:
        (size, 3 * size, 3) uint8 RGB: front | side | top, labelled.
    """
    vs = _as_list(verts)
    tris, cols = _triangles(vs, faces, colors)
    ok = np.isfinite(tris).all(axis=(1, 2))
    tris, cols = tris[ok], cols[ok]
    panels = []
    if len(tris):
        centre = 0.5 * (tris.reshape(-1, 3).min(0) + tris.reshape(-1, 3).max(0))
        radius = float(np.linalg.norm(tris.reshape(-1, 3) - centre, axis=1).max())
    scale = 0.45 * size / max(radius, 1e-6) if len(tris) else 1.0
    normals = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    for name, R in _VIEWS:
        canvas = np.empty((size, size, 3), np.uint8)
        canvas[:] = background
        mask = np.zeros((size, size), np.uint8)
        if len(tris):
            local = (tris - centre) @ R.T
            n = normals @ R.T
            shade, keep = _shade(n, np.broadcast_to([0.0, 0.0, -1.0], n.shape), True)
            pts = local[keep, :, :2] * scale + size / 2.0
            _paint(canvas, mask, pts, local[keep, :, 2].mean(1), shade[keep], cols[keep])
        panel = canvas
        cv2.putText(panel, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1,
                    cv2.LINE_AA)  # fmt: skip
        cv2.rectangle(panel, (0, 0), (size - 1, size - 1), (200, 200, 200), 1)
        panels.append(panel)
    out = np.concatenate(panels, axis=1)
    _legend(out, len(vs), colors)
    return out


def _legend(img: np.ndarray, n: int, colors: Sequence[Sequence[float]] | None) -> None:
    """Colour key 'left'/'right' in the bottom-left corner (for two-mesh renders)."""
    if n != 2:
        return
    cols = colors or SIDE_COLORS
    h = img.shape[0]
    for i, label in enumerate(("left", "right")):
        y = h - 12 - 20 * (1 - i)
        c = tuple(int(v) for v in cols[i])
        cv2.rectangle(img, (8, y - 10), (20, y + 2), c, -1)
        cv2.putText(img, label, (26, y + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1,
                    cv2.LINE_AA)  # fmt: skip
