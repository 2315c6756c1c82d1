"""Benchmark hand detection on the real photos: hands found, sides, stage, time per image.

Usage: ``PYTHONPATH=. python bench/detect.py [--images DIR] [--vis OUT_DIR] [--no-recovery]``.
The last line is machine readable: ``two_hand_rate=<found both>/<two-hand photos> median_ms=<ms>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from recon.detect import DetectConfig, DetectionResult, HandDetector
from recon.image_io import load_image

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"
BONES = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 4),
    (0, 5),
    (5, 6),
    (6, 7),
    (7, 8),
    (5, 9),
    (9, 10),
    (10, 11),
    (11, 12),
    (9, 13),
    (13, 14),
    (14, 15),
    (15, 16),
    (13, 17),
    (0, 17),
    (17, 18),
    (18, 19),
    (19, 20),
]
COLOURS = {"left": (40, 110, 255), "right": (255, 60, 40)}  # RGB: left blue, right red


def draw(image: np.ndarray, result: DetectionResult) -> np.ndarray:
    """Keypoints and bones per hand (left blue, right red) with side/stage labels; RGB."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 400))
    for hand in result.hands:
        colour = COLOURS[hand.side]
        kp = hand.keypoints_2d
        for a, b in BONES:
            cv2.line(
                out,
                tuple(np.round(kp[a]).astype(int)),
                tuple(np.round(kp[b]).astype(int)),
                colour,
                thick,
                cv2.LINE_AA,
            )
        for j, p in enumerate(kp):
            cv2.circle(
                out,
                tuple(np.round(p).astype(int)),
                thick * (3 if j == 0 else 2),
                (255, 255, 0) if j == 4 else colour,
                -1,
            )
        label = f"{hand.side} {hand.stage} {hand.handedness_source}"
        org = tuple(np.round(kp[0] + [0, 8 * thick]).astype(int))
        cv2.putText(
            out,
            label,
            org,
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4 * thick,
            (0, 0, 0),
            3 * thick,
            cv2.LINE_AA,
        )
        cv2.putText(
            out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick, cv2.LINE_AA
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--vis", type=Path, default=None, help="write keypoint drawings here")
    parser.add_argument("--no-recovery", action="store_true")
    parser.add_argument("--palm-model", action="store_true", help="add the TFLite palm stage")
    args = parser.parse_args()
    cfg = DetectConfig(recovery=not args.no_recovery, palm_model=args.palm_model)
    paths = sorted(
        p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if args.vis:
        args.vis.mkdir(parents=True, exist_ok=True)
    times, both, two_hand_photos = [], 0, 0
    with HandDetector(cfg) as detector:
        detector(np.zeros((64, 64, 3), np.uint8))  # warm-up: graph start-up is not per image
        print(
            f"{'image':28s} {'hands':>5s}  {'left (stage, source)':34s} {'right (stage, source)':34s} {'views':>5s} {'ms':>7s}"
        )
        for path in paths:
            image = load_image(path)
            t0 = time.perf_counter()
            result = detector(image)
            ms = (time.perf_counter() - t0) * 1000
            times.append(ms)
            cells = []
            for side in ("left", "right"):
                h = result.hand(side)
                cells.append(f"{h.stage}, {h.handedness_source}, {h.score:.2f}" if h else "-")
            print(
                f"{path.name:28s} {len(result.hands):5d}  {cells[0]:34s} {cells[1]:34s} {len(result.stages_run):5d} {ms:7.0f}"
            )
            for note in result.notes:
                print(f"{'':30s}note: {note}")
            if not path.name.startswith("one_hand"):
                two_hand_photos += 1
                both += len(result.hands) == 2
            if args.vis:
                vis = draw(image, result)
                cv2.imwrite(
                    str(args.vis / f"{path.stem}.png"), cv2.cvtColor(vis, cv2.COLOR_RGB2BGR)
                )
    print(f"two_hand_rate={both}/{two_hand_photos} median_ms={statistics.median(times):.0f}")


if __name__ == "__main__":
    main()
