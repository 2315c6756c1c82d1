"""Two-hand parameter containers and the MANO forward pass for both hands.

Conventions, stated once for the whole project:

* Hand axis: index 0 is the LEFT hand, index 1 the RIGHT hand (``LEFT, RIGHT = 0, 1``).
* Units are metres. The camera frame is OpenCV (x right, y down, z forward).
* Rotation suffixes: ``_aa`` axis-angle, ``_6d`` first two rows, ``_mat`` 3x3 matrices.
  Conversions come from ``roma``.
* ``pose_aa`` holds the 15 finger joints' axis-angle *relative to the model's hand mean* when
  ``flat_hand_mean=False`` (the InterHand2.6M / NeuralAnnot convention), absolute otherwise.
* The root rotation ``rot_mat`` turns the hand about its wrist joint, then ``transl`` is added
  (exactly MANO's ``global_orient`` + ``transl`` semantics).
* Joints: 21 per hand. Internally MANO order (16 kinematic joints, then the tips of thumb, index,
  middle, ring, pinky); :data:`JOINT_ORDERS` maps that to InterHand2.6M and MediaPipe orders.
  ``HandMeshes.joints`` is in InterHand2.6M order (wrist last, middle MCP at 11).
* Mirroring is the x-flip ``M = diag(-1, 1, 1)``: it swaps the sides, maps axis-angle
  ``(x, y, z) -> (x, -y, -z)``, ``R -> M R M`` and ``t -> M t``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

LEFT, RIGHT = 0, 1
SIDES = ("left", "right")
NUM_VERTS, NUM_JOINTS, NUM_POSE_JOINTS, NUM_BETAS = 778, 21, 15, 10
TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx's MANO tips)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# Index tables from MANO21 order (16 kinematic joints + 5 tips) to each named order:
# ``joints_in_order = joints_mano21[..., JOINT_ORDERS[name], :]``.
JOINT_ORDERS: dict[str, tuple[int, ...]] = {
    "mano": tuple(range(21)),
    # InterHand2.6M: [thumb4(tip) .. thumb1, index4..1, middle4..1, ring4..1, pinky4..1, wrist].
    "ih26m": (16, 15, 14, 13, 17, 3, 2, 1, 18, 6, 5, 4, 19, 12, 11, 10, 20, 9, 8, 7, 0),
    # MediaPipe: [wrist, thumb CMC MCP IP tip, index MCP PIP DIP tip, middle .., ring .., pinky ..].
    "mediapipe": (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20),
}
IH26M_WRIST, IH26M_MIDDLE_MCP = 20, 11
MIRROR = (-1.0, 1.0, 1.0)

log = logging.getLogger(__name__)


def convert_joints(joints: Tensor, src: str, dst: str) -> Tensor:
    """Reorder joints between named orders.

    Args:
        joints: (..., 21, D) joints in order ``src``.
        src, dst: keys of :data:`JOINT_ORDERS`.
    Returns:
        (..., 21, D) joints in order ``dst``.
    """
    for name in (src, dst):
        if name not in JOINT_ORDERS:
            raise ValueError(f"unknown joint order {name!r}; known: {sorted(JOINT_ORDERS)}")
    if joints.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected 21 joints on axis -2, got shape {tuple(joints.shape)}")
    to_mano = torch.as_tensor(np.argsort(JOINT_ORDERS[src]), device=joints.device)
    mano = joints.index_select(-2, to_mano)
    return mano.index_select(-2, torch.as_tensor(JOINT_ORDERS[dst], device=joints.device))


def _check(name: str, t: object, shape: tuple[int | None, ...]) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {t.dtype}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def _mirror_vec(x: Tensor) -> Tensor:
    """x-flip of vectors: (..., 3) -> (..., 3)."""
    return x * x.new_tensor(MIRROR)


@dataclass(frozen=True)
class TwoHands:
    """MANO parameters of a left and a right hand (index 0 = left, 1 = right).

    pose_aa: (B, 2, 15, 3) finger-joint axis-angle (relative to the hand mean, see module doc)
    betas:   (B, 2, 10)
    rot_mat: (B, 2, 3, 3) root (wrist) orientation
    transl:  (B, 2, 3) translation added to the MANO output, metres
    """

    pose_aa: Tensor
    betas: Tensor
    rot_mat: Tensor
    transl: Tensor

    def __post_init__(self) -> None:
        _check("pose_aa", self.pose_aa, (None, 2, NUM_POSE_JOINTS, 3))
        b = self.pose_aa.shape[0]
        _check("betas", self.betas, (b, 2, NUM_BETAS))
        _check("rot_mat", self.rot_mat, (b, 2, 3, 3))
        _check("transl", self.transl, (b, 2, 3))
        for f in fields(self):
            t = getattr(self, f.name)
            if t.dtype != self.pose_aa.dtype or t.device != self.pose_aa.device:
                raise ValueError(
                    f"{f.name} is {t.dtype} on {t.device}, pose_aa is "
                    f"{self.pose_aa.dtype} on {self.pose_aa.device}: all fields must match"
                )

    @property
    def batch_size(self) -> int:
        return self.pose_aa.shape[0]

    @property
    def device(self) -> torch.device:
        return self.pose_aa.device

    def _map(self, fn) -> TwoHands:
        return TwoHands(*(fn(getattr(self, f.name)) for f in fields(self)))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TwoHands:
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> TwoHands:
        return self._map(Tensor.detach)

    def clone(self) -> TwoHands:
        return self._map(Tensor.clone)

    def __getitem__(self, idx: int | slice | Tensor) -> TwoHands:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return self._map(lambda t: t[idx])

    def __len__(self) -> int:
        return self.batch_size

    @staticmethod
    def cat(items: Sequence[TwoHands]) -> TwoHands:
        if not items:
            raise ValueError("TwoHands.cat needs at least one item")
        return TwoHands(*(torch.cat([getattr(h, f.name) for h in items]) for f in fields(TwoHands)))

    @staticmethod
    def zeros(batch_size: int, device: torch.device | str = "cpu", dtype=torch.float32) -> TwoHands:
        """Mean-pose hands at the origin with identity root rotation."""
        eye = torch.eye(3, device=device, dtype=dtype).expand(batch_size, 2, 3, 3).clone()
        z = dict(device=device, dtype=dtype)
        return TwoHands(
            torch.zeros(batch_size, 2, NUM_POSE_JOINTS, 3, **z),
            torch.zeros(batch_size, 2, NUM_BETAS, **z),
            eye,
            torch.zeros(batch_size, 2, 3, **z),
        )

    def mirror(self) -> TwoHands:
        """x-flip of the whole scene: swaps sides, M R M rotations, (x,-y,-z) axis-angle, M t."""
        m = self.rot_mat.new_tensor(MIRROR)
        swap = [RIGHT, LEFT]
        return TwoHands(
            pose_aa=-_mirror_vec(self.pose_aa[:, swap]),  # (x, y, z) -> (x, -y, -z)
            betas=self.betas[:, swap],
            rot_mat=m[:, None] * self.rot_mat[:, swap] * m,  # M R M
            transl=_mirror_vec(self.transl[:, swap]),
        )

    def as_numpy(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)}


@dataclass(frozen=True)
class HandMeshes:
    """Posed meshes of both hands.

    verts:  (B, 2, 778, 3) metres
    joints: (B, 2, 21, 3) InterHand2.6M order (wrist at 20, middle MCP at 11)
    faces:  (2, F, 3) long; per side (the left winding is the mirror of the right)
    """

    verts: Tensor
    joints: Tensor
    faces: Tensor

    def __post_init__(self) -> None:
        _check("verts", self.verts, (None, 2, NUM_VERTS, 3))
        _check("joints", self.joints, (self.verts.shape[0], 2, NUM_JOINTS, 3))
        if self.faces.dim() != 3 or self.faces.shape[0] != 2 or self.faces.shape[2] != 3:
            raise ValueError(f"faces must have shape (2, F, 3), got {tuple(self.faces.shape)}")
        if self.faces.dtype != torch.long:
            raise ValueError(f"faces must be torch.long, got {self.faces.dtype}")

    @property
    def batch_size(self) -> int:
        return self.verts.shape[0]

    def joints_in(self, order: str) -> Tensor:
        """(B, 2, 21, 3) joints in a named order (see :data:`JOINT_ORDERS`)."""
        return convert_joints(self.joints, "ih26m", order)

    def root_joints(self) -> Tensor:
        """(B, 2, 3) wrist positions."""
        return self.joints[:, :, IH26M_WRIST]

    def middle_mcp(self) -> Tensor:
        """(B, 2, 3) middle-finger MCP positions (InterHandGen's anchor point)."""
        return self.joints[:, :, IH26M_MIDDLE_MCP]

    def __getitem__(self, idx: int | slice | Tensor) -> HandMeshes:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return HandMeshes(self.verts[idx], self.joints[idx], self.faces)

    def to(self, device: torch.device | str) -> HandMeshes:
        return HandMeshes(self.verts.to(device), self.joints.to(device), self.faces.to(device))

    def detach(self) -> HandMeshes:
        return HandMeshes(self.verts.detach(), self.joints.detach(), self.faces)

    @staticmethod
    def cat(items: Sequence[HandMeshes]) -> HandMeshes:
        if not items:
            raise ValueError("HandMeshes.cat needs at least one item")
        return HandMeshes(
            torch.cat([m.verts for m in items]), torch.cat([m.joints for m in items]), items[0].faces
        )

    def mirror(self) -> HandMeshes:
        """x-flip of the scene: swaps sides and mirrors coordinates (faces stay per side)."""
        swap = [RIGHT, LEFT]
        return HandMeshes(_mirror_vec(self.verts[:, swap]), _mirror_vec(self.joints[:, swap]), self.faces)


def _standin_or_dir(model_dir: Path | str | None) -> Path | None:
    return None if model_dir in (None, "") else Path(model_dir)


class ManoPair(nn.Module):
    """Both hands through ``smplx.MANO`` (one layer per side, ``use_pca=False``).

    ``ManoPair()`` uses the built-in stand-in hand model; ``ManoPair(model_dir=...)`` loads the
    official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` from that folder (chumpy-free, cached as npz).
    Library code reads no environment variables: entry points resolve ``$MANO_DIR`` with
    :func:`prior.mano_assets.resolve_mano_dir` and pass it here.
    """

    def __init__(
        self,
        model_dir: Path | str | None = None,
        flat_hand_mean: bool = False,
        fix_left_shapedirs: bool = True,
        cache_dir: Path | str | None = None,
    ) -> None:
        super().__init__()
        import smplx  # noqa: PLC0415  (heavy import kept local)
        from smplx.utils import Struct  # noqa: PLC0415

        from prior.mano_assets import load_mano_arrays  # noqa: PLC0415

        model_dir = _standin_or_dir(model_dir)
        arrays, self.model_name = load_mano_arrays(
            model_dir, fix_left_shapedirs=fix_left_shapedirs, cache_dir=cache_dir
        )
        if model_dir is None:
            log.info("no MANO files given: using the built-in stand-in hand model")
        self.flat_hand_mean = flat_hand_mean
        layers = []
        for side in SIDES:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a shape-space notice
                layer = smplx.MANO(
                    model_path="",
                    is_rhand=side == "right",
                    data_struct=Struct(**arrays[side]),
                    use_pca=False,
                    num_pca_comps=45,
                    flat_hand_mean=flat_hand_mean,
                    batch_size=1,
                )
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        for p in self.parameters():
            p.requires_grad_(False)
        faces = np.stack([arrays[s]["f"].astype(np.int64) for s in SIDES])
        self.register_buffer("_faces", torch.as_tensor(faces), persistent=False)
        comps = np.stack([arrays[s]["hands_components"] for s in SIDES]).astype(np.float32)
        means = np.stack([arrays[s]["hands_mean"] for s in SIDES]).astype(np.float32)
        self.register_buffer("_components", torch.as_tensor(comps), persistent=False)
        inv = np.linalg.inv(comps.astype(np.float64)).astype(np.float32)
        self.register_buffer("_components_inv", torch.as_tensor(inv), persistent=False)
        self.register_buffer("_hands_mean", torch.as_tensor(means), persistent=False)
        tips = torch.as_tensor(TIP_VERTEX_IDS, dtype=torch.long)
        self.register_buffer("_tips", tips, persistent=False)
        self.register_buffer(
            "_to_ih26m", torch.as_tensor(JOINT_ORDERS["ih26m"], dtype=torch.long), persistent=False
        )

    @property
    def faces(self) -> Tensor:
        """(2, F, 3) long faces, left then right."""
        return self._faces

    def hands_components(self) -> Tensor:
        """(2, 45, 45) pose PCA bases (rows are components), left then right."""
        return self._components

    def hands_components_inv(self) -> Tensor:
        """(2, 45, 45) inverses of :meth:`hands_components` (``pca = pose @ inv``)."""
        return self._components_inv

    def hands_mean(self) -> Tensor:
        """(2, 45) mean finger pose (axis-angle), left then right."""
        return self._hands_mean

    def forward(self, hands: TwoHands) -> HandMeshes:
        """Pose both hands.

        Args:
            hands: TwoHands with batch B.
        Returns:
            HandMeshes with verts (B, 2, 778, 3) and joints (B, 2, 21, 3) in InterHand2.6M order.
        """
        per_side = [self.forward_side(side, hands.pose_aa[:, side], hands.betas[:, side],
                                      hands.rot_mat[:, side], hands.transl[:, side])
                    for side in range(len(self.layers))]  # fmt: skip
        v = torch.stack([v for v, _ in per_side], dim=1)
        j = torch.stack([j for _, j in per_side], dim=1)
        return HandMeshes(v, j, self._faces)

    def forward_side(
        self, side: int, pose_aa: Tensor, betas: Tensor, rot_mat: Tensor, transl: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Pose one hand (half the work of :meth:`forward` when only one side changes).

        Args:
            side: 0 left, 1 right.
            pose_aa: (B, 15, 3). betas: (B, 10). rot_mat: (B, 3, 3) root rotation about the
                wrist. transl: (B, 3).
        Returns:
            verts (B, 778, 3) and joints (B, 21, 3) in InterHand2.6M order.
        """
        b = pose_aa.shape[0]
        out = self.layers[side](
            betas=betas,
            global_orient=pose_aa.new_zeros(b, 3),
            hand_pose=pose_aa.reshape(b, 45),
            return_verts=True,
        )
        v, j = out.vertices, out.joints  # (B,778,3), (B,16,3); root-relative rotation below
        j = torch.cat([j, v[:, self._tips]], dim=1)  # MANO21 order
        wrist = j[:, :1]
        shift = transl[:, None] + wrist
        # Root rotation about the wrist, then translation (MANO's global_orient + transl).
        rot_t = rot_mat.transpose(1, 2)
        return (v - wrist) @ rot_t + shift, ((j - wrist) @ rot_t + shift)[:, self._to_ih26m]

    @staticmethod
    def mirror(hands: TwoHands) -> TwoHands:
        """Alias of :meth:`TwoHands.mirror` (x-flip, swaps sides)."""
        return hands.mirror()
