"""Pure geometry behind hand detection: chirality, side evidence, candidate merging, pair choice.

Nothing here runs a network; every function works on :class:`HandDetection` records or arrays
in MediaPipe's 21-landmark order (0 wrist, 1-4 thumb, 5-8 index, 9-12 middle, 13-16 ring,
17-20 pinky) and full-image pixel coordinates.

Chirality (measured on the photos in ``shared/data/images`` and their mirrored copies): with
MediaPipe's world landmarks ``w`` (image axes: x right, y down, z away from the camera), the
palm normal ``n = (w[5] - w[0]) x (w[17] - w[0])`` (wrist->index MCP cross wrist->pinky MCP)
points to the side the fingers flex toward (and the thumb tip sits on) for a RIGHT hand, and
away from it for a left hand. A mirrored image flips the sign. A flat hand is achiral
(value near 0): then the classifier decides.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

WRIST, THUMB_TIP, INDEX_MCP, MIDDLE_MCP, PINKY_MCP = 0, 4, 5, 9, 17
FINGER_MCP_TIP = ((5, 8), (9, 12), (13, 16), (17, 20))


@dataclass(frozen=True)
class HandDetection:
    """One hand found in an image.

    keypoints_2d: (21, 2) float px in the full-resolution image, MediaPipe order.
    confidence: (21,) in [0, 1]; MediaPipe gives no per-landmark score, see ``recon.detect``.
    world_landmarks: (21, 3) metres, hand-centred, image-aligned axes, or None.
    is_right: the decided side.
    score: hand score in [0, 1] (MediaPipe's handedness-classifier score, stage-discounted).
    stage: which detection stage found it ("mediapipe", "flip", "rot+20", "crop2.0-left", ...).
    handedness_source: what decided ``is_right``: "classifier", "chirality", "pair-resolution".
    right_prob: the classifier's probability that this is a right hand (after the selfie swap).
    chirality: signed, size-normalised chirality (> 0 means right), 0.0 without world landmarks.
    support: number of detection views whose candidates merged into this hand.
    """

    keypoints_2d: np.ndarray
    confidence: np.ndarray
    world_landmarks: np.ndarray | None
    is_right: bool
    score: float
    stage: str
    handedness_source: str
    right_prob: float = 0.5
    chirality: float = 0.0
    support: int = 1

    @property
    def side(self) -> str:
        return "right" if self.is_right else "left"

    @property
    def box_xyxy(self) -> np.ndarray:
        """(4,) tight keypoint box [x0, y0, x1, y1] in px."""
        return np.concatenate([self.keypoints_2d.min(0), self.keypoints_2d.max(0)])

    @property
    def size(self) -> float:
        """Hand size in px: the longer side of the keypoint box (at least 1 px)."""
        return hand_size(self.keypoints_2d)


def hand_size(keypoints_2d: np.ndarray) -> float:
    """Longer side of the keypoint box of (21, 2) px keypoints, at least 1 px."""
    extent = keypoints_2d.max(0) - keypoints_2d.min(0)
    return max(float(extent.max()), 1.0)


def chirality(world: np.ndarray) -> float:
    """Signed chirality of (21, 3) world landmarks; > 0 right hand, < 0 left, ~0 flat hand.

    The palm normal (wrist->index MCP x wrist->pinky MCP) is dotted with the mean finger
    flexion (MCP->tip) and, at half weight, the thumb tip's offset from the palm; both are
    divided by the wrist->middle-MCP length so the value is scale free (typically 0.1-0.7).
    """
    w = np.asarray(world, dtype=np.float64)
    normal = np.cross(w[INDEX_MCP] - w[WRIST], w[PINKY_MCP] - w[WRIST])
    norm = np.linalg.norm(normal)
    palm_len = np.linalg.norm(w[MIDDLE_MCP] - w[WRIST])
    if norm < 1e-9 or palm_len < 1e-9:
        return 0.0
    normal /= norm
    flex = np.mean([w[tip] - w[mcp] for mcp, tip in FINGER_MCP_TIP], axis=0)
    thumb = w[THUMB_TIP] - 0.5 * (w[INDEX_MCP] + w[PINKY_MCP])
    return float((normal @ flex + 0.5 * normal @ thumb) / palm_len)


def side_evidence(
    right_prob: float, chir: float, chirality_scale: float = 0.2
) -> tuple[float, str]:
    """Combine classifier and chirality into one signed evidence (> 0 right) and its source.

    Each cue contributes a value in [-1, 1]: ``2p - 1`` for the classifier and
    ``clip(chirality / chirality_scale)`` for the geometry. The source names the cue that
    carries the sign: the chirality when it is decisive (|value| >= 0.5) and agrees, or when it
    outweighs a disagreeing classifier; otherwise the classifier.
    """
    cls = 2.0 * right_prob - 1.0
    geo = float(np.clip(chir / chirality_scale, -1.0, 1.0))
    evidence = cls + geo
    agree = np.sign(cls) == np.sign(geo)
    if (agree and abs(geo) >= 0.5) or (not agree and abs(geo) > abs(cls)):
        return evidence, "chirality"
    return evidence, "classifier"


def mean_keypoint_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance between two (21, 2) keypoint sets, px."""
    return float(np.linalg.norm(a - b, axis=-1).mean())


def same_hand(a: HandDetection, b: HandDetection, merge_frac: float) -> bool:
    """Whether two candidates lie on one physical hand.

    Mean keypoint distance under ``merge_frac`` of the smaller hand size, or (to catch a second
    pose estimate on the same hand, e.g. with the fingers in a different order) wrists and
    palm centres both within ``merge_frac``.
    """
    size = min(a.size, b.size)
    if mean_keypoint_distance(a.keypoints_2d, b.keypoints_2d) < merge_frac * size:
        return True
    palm = [WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP]
    d_palm = np.linalg.norm(a.keypoints_2d[palm] - b.keypoints_2d[palm], axis=-1)
    return bool(d_palm.max() < merge_frac * size)


def merge_candidates(
    cands: list[HandDetection], merge_frac: float = 1.0 / 3.0
) -> list[HandDetection]:
    """Greedy NMS over candidates in the given priority order (first = most trusted).

    A candidate that lies on an already kept hand is absorbed: the kept hand's ``support``
    grows and its classifier probability and chirality become support-weighted averages of
    the views that agree with it (views flipped back into the original image included).
    Args:
        cands: candidates sorted by priority.
        merge_frac: merge distance as a fraction of hand size.
    Returns:
        distinct hands, in priority order.
    """
    kept: list[HandDetection] = []
    for cand in cands:
        for i, hand in enumerate(kept):
            if same_hand(hand, cand, merge_frac):
                n = hand.support
                kept[i] = replace(
                    hand,
                    support=n + 1,
                    right_prob=(hand.right_prob * n + cand.right_prob) / (n + 1),
                    chirality=(hand.chirality * n + cand.chirality) / (n + 1),
                )
                break
        else:
            kept.append(cand)
    return kept


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area over the smaller area of two (4,) xyxy boxes, in [0, 1]."""
    wh = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0.0, None)
    area = lambda box: max(float(np.prod(box[2:] - box[:2])), 1e-9)
    return float(wh.prod() / min(area(a), area(b)))


def drop_false_doubles(
    hands: list[HandDetection], chirality_scale: float, max_overlap: float = 0.3
) -> tuple[list[HandDetection], list[str]]:
    """Remove recovery candidates that re-read an already kept hand.

    A candidate found in a recovery view (stage other than "mediapipe") whose keypoint box
    overlaps a more trusted hand (earlier in ``hands``) by more than ``max_overlap`` of the
    smaller box, and whose own evidence claims the same side, is taken as a second reading of
    that hand (e.g. the curled fingers read as a fist) rather than the other hand. The other
    hand of a clasp overlaps too, but looks like the opposite side.
    Args:
        hands: distinct hands in priority order.
    Returns:
        (kept hands in order, notes on dropped ones).
    """
    kept: list[HandDetection] = []
    notes: list[str] = []
    for hand in hands:
        e = side_evidence(hand.right_prob, hand.chirality, chirality_scale)[0]
        double = hand.stage != "mediapipe" and any(
            box_overlap(hand.box_xyxy, other.box_xyxy) > max_overlap
            and np.sign(e)
            == np.sign(side_evidence(other.right_prob, other.chirality, chirality_scale)[0])
            for other in kept
        )
        if double:
            notes.append(
                f"dropped a {hand.side}-looking {hand.stage} candidate overlapping a kept hand"
            )
        else:
            kept.append(hand)
    return kept, notes


def decide_side(hand: HandDetection, chirality_scale: float) -> HandDetection:
    """Set ``is_right`` and ``handedness_source`` of one hand from its own evidence."""
    evidence, source = side_evidence(hand.right_prob, hand.chirality, chirality_scale)
    return replace(hand, is_right=bool(evidence > 0), handedness_source=source)


def select_pair(
    hands: list[HandDetection],
    min_score: float,
    chirality_scale: float = 0.2,
    side_weight: float = 1.0,
    layout_weight: float = 0.3,
) -> tuple[list[HandDetection], list[str]]:
    """Keep the best left/right pair (or the single best hand) among distinct hands.

    Every pair (i, j) and both side assignments are scored:
    ``score_i + score_j + side_weight * (e_R - e_L) / 2 + layout``, where ``e`` is each hand's
    side evidence (> 0 right) and ``layout`` is ``+layout_weight`` when the right hand's wrist
    is left of the left hand's wrist in the image (a person facing the camera with uncrossed
    arms). The layout term only matters when the evidence is ambiguous, typically two hands
    that both look like the same side. A hand whose assigned side contradicts its own evidence
    gets ``handedness_source = "pair-resolution"``.
    Args:
        hands: distinct hands (after :func:`merge_candidates`).
        min_score: hands below this score are dropped.
    Returns:
        (at most one left and one right hand, left first; notes explaining decisions).
    """
    hands, notes = drop_false_doubles([h for h in hands if h.score >= min_score], chirality_scale)
    pool = [decide_side(h, chirality_scale) for h in hands]
    if not pool:
        return [], notes
    if len(pool) == 1:
        return pool, notes
    evidence = [side_evidence(h.right_prob, h.chirality, chirality_scale)[0] for h in pool]
    best: tuple[float, int, int] | None = None  # (total, right index, left index)
    for r in range(len(pool)):
        for left in range(len(pool)):
            if r == left:
                continue
            total = pool[r].score + pool[left].score
            total += side_weight * (evidence[r] - evidence[left]) / 2.0
            if pool[r].keypoints_2d[WRIST, 0] < pool[left].keypoints_2d[WRIST, 0]:
                total += layout_weight
            if best is None or total > best[0] + 1e-9:
                best = (total, r, left)
    assert best is not None
    _, r, left = best
    out = []
    for idx, want_right in ((left, False), (r, True)):
        hand = pool[idx]
        if hand.is_right != want_right:
            notes.append(
                f"pair-resolution: hand at wrist {np.round(hand.keypoints_2d[WRIST]).tolist()} "
                f"set to {'right' if want_right else 'left'} against its own evidence "
                f"{evidence[idx]:+.2f} (both hands looked {hand.side})"
            )
            hand = replace(hand, is_right=want_right, handedness_source="pair-resolution")
        out.append(hand)
    if len(pool) > 2:
        notes.append(f"{len(pool)} distinct hands found; kept the best left/right pair")
    return out, notes
