"""IntagHand-preprocessed InterHand2.6M: ``{root}/{split}/anno/{idx}.pkl`` as :class:`TwoHands`.

This is what InterHandGen trains on (one pickle per camera image of an interacting frame).
Pickles are code, so they are read with the restricted unpickler of :mod:`datasets.safe_pickle`;
the record layout is parsed by :func:`datasets.interhand_annot.parse_intaghand_record`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from datasets.interhand_annot import SkipLog, WristModel, hands_to_camera, parse_intaghand_record
from datasets.safe_pickle import load_pickle
from prior.hands import TwoHands

__all__ = ["IntagHandAnno"]

log = logging.getLogger(__name__)


class IntagHandAnno(Dataset, SkipLog):
    """IntagHand-preprocessed ``{root}/{split}/anno/{idx}.pkl``: ``(TwoHands, True)`` per file.

    The pkl's ``pose`` holds 45 MANO PCA coefficients of the *absolute* finger pose:
    ``aa_abs = pose @ hands_components + hands_mean``; TwoHands stores the pose relative to the
    mean (``flat_hand_mean=False``), so ``pose_aa = aa_abs - hands_mean = pose @ hands_components``
    with the matching side's basis. ``R`` (1,3,3) world root rotation, ``shape`` (1,10), ``trans``
    (1,3) metres. Every record is interacting (IntagHand's filter), hence the constant True.

    Args:
        root: IntagHand's ``save_path`` (contains ``{split}/anno``).
        split: split folder name.
        mano: ManoPair providing ``hands_components()`` (and J0 for the camera frame).
        frame: ``world`` or ``camera`` (the pkl's own ``camera.R``, ``camera.t`` in metres).
        dedupe_views: keep one pkl per (capture, frame_idx) of its ``image`` record (reads all
            pkls at construction).
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        mano: torch.nn.Module,
        frame: Literal["world", "camera"] = "world",
        dedupe_views: bool = False,
    ) -> None:
        SkipLog.__init__(self)
        if frame not in ("world", "camera"):
            raise ValueError(f"frame must be 'world' or 'camera', got {frame!r}")
        if dedupe_views and frame == "camera":
            raise ValueError("dedupe_views=True needs frame='world' (camera-frame samples differ per view)")
        anno = Path(root) / split / "anno"
        if not anno.is_dir():
            raise FileNotFoundError(f"{anno}: IntagHand anno folder not found")
        files = [(int(p.stem), p) for p in anno.glob("*.pkl") if p.stem.isdigit()]
        self.files = [p for _, p in sorted(files)]
        self.frame = frame
        self._components = mano.hands_components().detach().double().cpu()  # (2, 45, 45)
        self._wrist = WristModel(mano) if frame == "camera" else None
        if dedupe_views:
            seen: set[tuple[str, str]] = set()
            kept = []
            for p in self.files:
                img = load_pickle(p).get("image", {})
                key = (str(img.get("capture")), str(img.get("frame_idx")))
                if key in seen:
                    self.counts["duplicate camera view"] += 1
                    continue
                seen.add(key)
                kept.append(p)
            self.files = kept
        self.log_summary(f"IntagHandAnno({split})", len(self.files))

    def __len__(self) -> int:
        return len(self.files)

    def read(self, idx: int) -> TwoHands:
        """TwoHands (batch 1, float32) of file ``idx`` in the chosen frame."""
        path = self.files[int(idx)]
        hands, rot, t = parse_intaghand_record(load_pickle(path), path, self._components)
        if self.frame == "camera":
            hands = hands_to_camera(hands, rot[None], t[None], self._wrist(hands.betas))
        return hands.to(dtype=torch.float32)

    def __getitem__(self, idx: int) -> tuple[TwoHands, bool]:
        return self.read(idx), True
