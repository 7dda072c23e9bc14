"""How much resolution `prepare` should store per person: bytes, decode time and crop quality on real photos.

For each real photo with joints in ../shared/fixtures (the five MPII photos, 1280 x 720 and 854 x 480, and
the 107 LSPET photos), each person's pre-crop region is stored the way `prepare` stores it under a
resolution setting (`PrecropRule`: full resolution, or scaled so that the smallest crop of the recipe maps
onto the 227 px input at ``1 + margin`` stored pixels per output pixel) and JPEG-encoded at quality 95.
Reported per setting and photo set, per person:

- bytes of the stored JPEG;
- decode time of the stored JPEG (``cv2.imdecode``, one thread, median of repeats);
- PSNR (peak 255) of 227 px crops cut from the stored region against the same crops cut from the original
  photo (the same bilinear warp, ``pipeline.reference.crop_decoded``, on the same random draws of the
  widest recipe of the presets: extension 1.0 to 2.0, shift 0.1), mean and 5th percentile over crops;
- the same PSNR against an anti-aliased crop of the original photo (the bilinear warp at 4 x 4 samples per
  output pixel, area-averaged): a bilinear warp that shrinks the photo by up to 2x aliases, so this says
  which stored version gives crops closer to the photo's content rather than to the aliased crop.

Run: ``.venv/bin/python benchmarks/stored_resolution.py [--fixtures ../shared/fixtures] [--crops 8]``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from deeppose_fast import codec
from deeppose_fast.datasets.precrop import PrecropRule
from deeppose_fast.pipeline import reference
from deeppose_fast.specs import AugmentSpec

RECIPE = AugmentSpec(ext_min=1.0, ext_max=2.0, shift=0.1, flip=False)
SETTINGS = {"full resolution": PrecropRule(resolution=0), "margin 0": PrecropRule(resolution_margin=0.0),
            "margin 0.25": PrecropRule(resolution_margin=0.25), "margin 0.5": PrecropRule(resolution_margin=0.5),
            "margin 1.0": PrecropRule(resolution_margin=1.0)}


def mpii_people(fixtures: Path) -> list[tuple[Path, np.ndarray]]:
    """(photo, (16, 2) continuous pixels, NaN where not annotated) of the MPII sample."""
    folder = fixtures / "mpii-sample"
    people = json.loads((folder / "test_mpii.json").read_text())
    return [(folder / p["image"], np.where(np.asarray(p["joints_vis"])[:, None] > 0,
                                            np.asarray(p["joints"], np.float64) + 0.5, np.nan)) for p in people]


def lspet_people(fixtures: Path) -> list[tuple[Path, np.ndarray]]:
    """(photo, (14, 2) continuous pixels, NaN where not annotated) of the LSPET photos at hand (the file's
    coordinates are 1-based: continuous = file - 0.5)."""
    folder = fixtures / "real" / "lspet-axelcarlier"
    joints = scipy.io.loadmat(str(folder / "joints.mat"))["joints"]  # (14, 3, 10000)
    out = []
    for photo in sorted((folder / "images").glob("im*.jpg")):
        j = joints[:, :, int(photo.stem[2:]) - 1]
        out.append((photo, np.where(j[:, 2:3] > 0, j[:, :2] - 0.5, np.nan)))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def decode_ms(jpeg: bytes, repeats: int) -> float:
    buf = np.frombuffer(jpeg, np.uint8)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        cv2.imdecode(buf, cv2.IMREAD_COLOR)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def measure(people, rule: PrecropRule, draws: np.ndarray, repeats: int) -> dict:
    sizes, decodes, psnrs, aa_psnrs, scaled = [], [], [], [], 0
    for photo_path, joints in people:
        photo = cv2.imread(str(photo_path), cv2.IMREAD_COLOR)
        H, W = photo.shape[:2]
        inside = np.isfinite(joints).all(1) & (joints[:, 0] >= 0) & (joints[:, 0] <= W) \
            & (joints[:, 1] >= 0) & (joints[:, 1] <= H)
        if inside.sum() < 2:
            continue
        joints = np.where(inside[:, None], joints, np.nan)
        region = rule.region(joints, W, H)
        x0, y0, x1, y1 = region
        w2, h2 = rule.stored_size(joints, region, W, H)
        pixels = photo[y0:y1, x0:x1]
        if (w2, h2) != (x1 - x0, y1 - y0):
            pixels = cv2.resize(pixels, (w2, h2), interpolation=cv2.INTER_AREA)
            scaled += 1
        jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, rule.jpeg_quality])[1].tobytes()
        sizes.append(len(jpeg))
        decodes.append(decode_ms(jpeg, repeats))
        stored = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        scale = np.float32([w2 / (x1 - x0), h2 / (y1 - y0)])
        source_pose = np.zeros((len(joints), 4), np.float32)
        source_pose[inside, :2] = joints[inside]
        source_pose[inside, 2] = 1
        stored_pose = source_pose.copy()
        stored_pose[inside, :2] = (joints[inside] - [x0, y0]) * scale
        for d in draws:
            want, g = reference.crop_decoded(photo, source_pose, d, size=227, normalize_image=False)
            got, _ = reference.crop_decoded(stored, stored_pose, d, size=227, normalize_image=False, scale=scale)
            psnrs.append(psnr(got, want))
            aa_psnrs.append(psnr(got, antialiased_crop(photo, g)))
    return {"people": len(sizes), "scaled": scaled, "bytes": float(np.mean(sizes)),
            "decode_ms": float(np.mean(decodes)), "psnr_mean": float(np.mean(psnrs)),
            "psnr_p5": float(np.percentile(psnrs, 5)), "aa_psnr_mean": float(np.mean(aa_psnrs))}


def antialiased_crop(photo: np.ndarray, geometry: codec.Geometry, factor: int = 4) -> np.ndarray:
    """(227, 227, 3) float32 RGB crop of ``photo`` (BGR) under ``geometry``: the bilinear warp to
    ``factor`` times the size (the src->dst matrix scaled), then each ``factor`` x ``factor`` block averaged."""
    size = 227
    x, y = int(geometry.anchor[0]), int(geometry.anchor[1])
    w, h = int(geometry.shape[0]), int(geometry.shape[1])
    region = cv2.cvtColor(photo[y:y + h, x:x + w], cv2.COLOR_BGR2RGB).astype(np.float32)
    big = cv2.warpAffine(region, reference.opencv_matrix(geometry.matrix.astype(np.float64) * factor),
                         (size * factor, size * factor), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return big.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    parser.add_argument("--crops", type=int, default=8, help="random crops per person")
    parser.add_argument("--repeats", type=int, default=5, help="decodes per JPEG (median)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    draws = codec.sample_draws(np.random.default_rng(0), args.crops, RECIPE)
    sets = {"MPII photos": mpii_people(args.fixtures), "LSPET photos": lspet_people(args.fixtures)}
    rows = []
    print("| photos | setting | people (scaled) | KB / person | decode ms / person | PSNR mean dB | PSNR 5th pct dB "
          "| PSNR vs anti-aliased dB |")
    print("|---|---|---|---|---|---|---|---|")
    for set_name, people in sets.items():
        for name, rule in SETTINGS.items():
            r = measure(people, rule, draws, args.repeats)
            rows.append({"photos": set_name, "setting": name, **r})
            print(f"| {set_name} | {name} | {r['people']} ({r['scaled']}) | {r['bytes'] / 1000:.1f} | "
                  f"{r['decode_ms']:.2f} | {r['psnr_mean']:.1f} | {r['psnr_p5']:.1f} | {r['aa_psnr_mean']:.1f} |",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
