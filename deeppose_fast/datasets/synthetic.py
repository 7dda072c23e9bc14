"""A deterministic generator of synthetic people, written in the official LSP, LSPET and MPII file formats.

Each person is a 3D kinematic tree (pelvis, spine/thorax, neck, head, shoulders, elbows, wrists, hips, knees,
ankles) with plausible limb-length ratios and joint-angle ranges, turned to a random facing direction,
projected orthographically and drawn with OpenCV as thick shaded, outlined segments (anti-aliased) over a
textured background (gradients, smooth noise, stripes, random shapes, grain). Left and right can be told
apart by two kinds of cue:

- the facing direction (which side of the body is towards the camera): a face (skin, eyes, nose) on the
  front of the head and hair on the back, a stripe down the front of the shirt, feet pointing forward.
  These stay consistent under a horizontal flip with the left/right label swap (the mirror image of a
  person facing the camera is a person facing the camera);
- chiral cues: the person's left limbs are a lighter shade of the clothing colour and the right ones a
  darker one, and a badge marks the left chest. A flip with label swap turns these around, so with flip
  augmentation they are noise and only the facing cues teach left from right; without flips they make
  the task much easier.

Some joints are hidden by a random occluder or by the person's own body (annotated, flagged
invisible); MPII and LSPET people may extend out of the frame (those joints are not annotated).

Conventions (docs/ARCHITECTURE.md): joints are continuous pixel coordinates (pixel ``i`` covers
``[i, i+1)``); the files hold 1-based MATLAB pixel coordinates, ``x_file = x + 0.5``. Internally every
person has the 16 MPII joints (``skeleton.MPII`` order); LSP's 14 are taken from them by name (LSP
``neck`` = MPII ``upper_neck``).

Each writer also saves ``synthetic_truth.npz`` beside the official files (not part of any official
format): the ground truth it drew, for tests that compare parsers against it (see ``Truth``).

Command line: ``python -m deeppose_fast.datasets.synthetic OUT --format mpii --preset small``.
"""
from __future__ import annotations

import argparse
import io
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from deeppose_fast import skeleton

TRUTH_FILE = "synthetic_truth.npz"
MPII_MAT = "mpii_human_pose_v1_u12_1.mat"

# images per format for the presets: "small" is a few thousand people (CI, the CPU training preset);
# "mpii" is MPII's size (about 20k annotated people) and LSP/LSPET's real sizes.
PRESETS = {
    "small": {"lsp": 2000, "lspet": 3000, "mpii": 2400},
    "mpii": {"lsp": 2000, "lspet": 10000, "mpii": 15200},
}
# MPII image size per preset (W, H): 640 x 480 keeps a 20k-people set fast to write and to decode here.
MPII_IMAGE_SIZE = {"small": (480, 360), "mpii": (640, 480)}
# LSP-like person-centric images (W, H), drawn at random per image
LSP_IMAGE_SIZES = ((240, 320), (300, 400), (320, 240), (400, 300), (360, 360), (270, 360))

_M = skeleton.MPII
_J = {name: i for i, name in enumerate(_M.joint_names)}
_K = _M.num_joints
# LSP's 14 joints as MPII indices, by name (LSP "neck" is MPII's "upper_neck")
LSP_FROM_MPII = np.array([_J["upper_neck" if n == "neck" else n] for n in skeleton.LSP.joint_names])

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
_AA = cv2.LINE_AA
_OCCLUDER = 1 << 20  # label of occluders in the label map (people use person * 32 + part)
_JPEG_QUALITY = 90
# pose mix (probabilities): relaxed arms (else anything from raised to reaching back); standing, dynamic
# (walking, running, kicking), else sitting / crouching; facing the camera within ~30 deg (else any yaw);
# any in-plane roll (lying, upside down; else within ~8 deg). Varied, yet learnable by a small network in
# minutes: the mean pose alone scores symmetric PCKh@0.5 ~0.40 on eval crops (0.33 with 8 % any roll,
# 60 % facing, 70 % relaxed arms).
_POSE_MIX = dict(arms_relaxed=0.75, standing=0.65, dynamic=0.2, facing_front=0.7, any_roll=0.03)
# MATLAB header text: fixed, so the same seed gives the same bytes (savemat writes the date otherwise)
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by deeppose_fast.datasets.synthetic"


# ----------------------------------------------------------------------------------------------
# geometry
def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rot(axis: np.ndarray, a: float) -> np.ndarray:
    """Rodrigues: rotation by angle ``a`` about unit ``axis`` (3,)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def _deg(rng, lo, hi):
    return math.radians(rng.uniform(lo, hi))


def _normal_deg(rng, mean, std, lo=-180.0, hi=180.0):
    return math.radians(float(np.clip(rng.normal(mean, std), lo, hi)))


@dataclass
class _Body:
    """A posed person in camera space, units of body height: x right, y up, z toward the camera."""

    joints: np.ndarray  # (16, 3), MPII order
    face: np.ndarray  # (3,) unit forward direction of the face
    head_left: np.ndarray  # (3,) unit, the person's left seen from the head
    head_up: np.ndarray  # (3,)
    chest: np.ndarray  # (3,) badge position on the left chest
    chest_normal: np.ndarray  # (3,) torso forward direction
    front_panel: np.ndarray  # (4, 3) a stripe down the front of the shirt (a cue to the facing direction)
    hands: np.ndarray  # (2, 3) hand centres, right then left
    feet: np.ndarray  # (2, 3) toe points, right then left
    widths: dict  # part -> thickness in body heights


def _sample_body(rng: np.random.Generator) -> _Body:
    """Sample proportions, joint angles and a global orientation (body frame: x = person's left, y = up,
    z = forward; a person with zero yaw faces the camera, so their left is the image's right)."""
    jit = lambda: rng.uniform(0.9, 1.1)  # noqa: E731 - per-length proportion jitter
    width = rng.uniform(0.85, 1.2)
    # MPII's annotations put the upper neck below the chin: head top - upper neck is about 0.55 x
    # thorax - pelvis in the real files (shared/fixtures/mpii-sample), longer than the skull alone
    torso, neck, head = 0.26 * jit(), 0.05 * jit(), 0.15 * jit()
    sh_half, hip_half = 0.115 * width * jit(), 0.085 * width * jit()
    uarm, farm = 0.175 * jit(), 0.15 * jit()
    thigh, shank = 0.245 * jit(), 0.245 * jit()

    y_axis, x_axis, z_axis = np.array([0.0, 1, 0]), np.array([1.0, 0, 0]), np.array([0.0, 0, 1])
    r_torso = _rz(_normal_deg(rng, 0, 8, -30, 30)) @ _rx(_normal_deg(rng, 8, 12, -20, 60))
    r_upper = r_torso @ _ry(_normal_deg(rng, 0, 12, -35, 35))
    j = np.zeros((_K, 3))
    j[_J["pelvis"]] = 0.0
    j[_J["thorax"]] = torso * (r_torso @ y_axis)
    for side, sh, hp in ((-1, "r_shoulder", "r_hip"), (1, "l_shoulder", "l_hip")):
        j[_J[sh]] = j[_J["thorax"]] + r_upper @ np.array([side * sh_half, -0.015, 0.0])
        j[_J[hp]] = np.array([side * hip_half, -0.01, 0.0])
    r_neck = r_upper @ _rz(_normal_deg(rng, 0, 6, -20, 20)) @ _rx(_normal_deg(rng, 0, 8, -25, 25))
    j[_J["upper_neck"]] = j[_J["thorax"]] + neck * (r_neck @ y_axis)
    r_head = r_neck @ _rz(_normal_deg(rng, 0, 10, -35, 35)) @ _rx(_normal_deg(rng, 3, 12, -35, 40))
    j[_J["head_top"]] = j[_J["upper_neck"]] + head * (r_head @ y_axis)
    r_face = r_head @ _ry(_normal_deg(rng, 0, 25, -70, 70))

    hands, feet = np.zeros((2, 3)), np.zeros((2, 3))
    down = np.array([0.0, -1, 0])
    for k, (side, sh, el, wr) in enumerate(((-1, "r_shoulder", "r_elbow", "r_wrist"),
                                            (1, "l_shoulder", "l_elbow", "l_wrist"))):
        if rng.random() < _POSE_MIX["arms_relaxed"]:  # relaxed arms; otherwise anything from raised to reaching back
            abd, flex = _deg(rng, 5, 70), _normal_deg(rng, 10, 25, -40, 90)
        else:
            abd, flex = _deg(rng, 40, 170), _deg(rng, -40, 160)
        d_upper = r_upper @ _rz(side * abd) @ _rx(-flex) @ down
        bend = _deg(rng, 0, 30) if rng.random() < 0.35 else _deg(rng, 0, 145)
        axis = np.cross(d_upper, rng.normal(size=3))  # any bend plane: the upper arm can rotate
        d_fore = _rot(axis, bend) @ d_upper
        j[_J[el]] = j[_J[sh]] + uarm * d_upper
        j[_J[wr]] = j[_J[el]] + farm * d_fore
        hands[k] = j[_J[wr]] + 0.035 * d_fore

    u = rng.random()
    for k, (side, hp, kn, an) in enumerate(((-1, "r_hip", "r_knee", "r_ankle"), (1, "l_hip", "l_knee", "l_ankle"))):
        abd = _normal_deg(rng, 6, 8, -15, 45)
        if u < _POSE_MIX["standing"]:  # standing
            flex, knee = _normal_deg(rng, 5, 10, -20, 40), _deg(rng, 0, 25)
        elif u < _POSE_MIX["standing"] + _POSE_MIX["dynamic"]:  # walking, running, kicking
            flex, knee = _deg(rng, -30, 100), _deg(rng, 0, 130)
        else:  # sitting or crouching
            flex, knee = _deg(rng, 60, 115), _deg(rng, 60, 150)
        r_leg = _rz(side * abd) @ _rx(-flex)
        d_thigh = r_leg @ down
        # the knee bends backward only: about the thigh's lateral axis
        d_shank = _rot(_rz(side * abd) @ x_axis, knee) @ d_thigh
        j[_J[kn]] = j[_J[hp]] + thigh * d_thigh
        j[_J[an]] = j[_J[kn]] + shank * d_shank
        foot = _rz(side * abd) @ _rx(knee - flex) @ _ry(side * _deg(rng, 0, 20)) @ np.array([0.0, -0.2, 1.0])
        feet[k] = j[_J[an]] + 0.07 * foot / np.linalg.norm(foot)

    # global orientation: mostly facing the camera, some from behind or the side, a few lying or upside down
    yaw = _normal_deg(rng, 0, 30) if rng.random() < _POSE_MIX["facing_front"] else _deg(rng, -180, 180)
    roll = _normal_deg(rng, 0, 8, -30, 30) if rng.random() < 1 - _POSE_MIX["any_roll"] else _deg(rng, -180, 180)
    r_g = _rz(roll) @ _rx(_normal_deg(rng, 0, 6, -20, 20)) @ _ry(yaw)
    t = lambda v: v @ r_g.T  # noqa: E731
    chest = j[_J["thorax"]] + r_upper @ np.array([0.055 * width, -0.06, 0.045])
    # on the front surface of the torso (half-depth 0.05): seen edge-on in profile, at the front edge
    half = 0.03 * width
    panel = [j[_J["thorax"]] + r_upper @ np.array([dx, -0.01, 0.05]) for dx in (-half, half)]
    panel += [r_torso @ np.array([dx, 0.02, 0.05]) for dx in (half, -half)]
    return _Body(
        joints=t(j), face=r_g @ r_face @ z_axis, head_left=r_g @ r_face @ x_axis, head_up=r_g @ r_head @ y_axis,
        chest=t(chest), chest_normal=r_g @ r_upper @ z_axis, front_panel=t(np.array(panel)), hands=t(hands), feet=t(feet),
        widths={"uarm": 0.06, "farm": 0.048, "thigh": 0.085, "shank": 0.065, "neck": 0.055,
                "torso": 0.15 * width, "girdle": 0.07 * width, "hand": 0.028, "foot": 0.04,
                "head": 0.47 * head},
    )


# ----------------------------------------------------------------------------------------------
# drawing
def _bgr(h: float, s: float, v: float) -> np.ndarray:
    """HSV (h in [0, 180), s, v in [0, 1]) -> BGR float (3,)."""
    px = np.uint8([[[int(h) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def _lum(bgr) -> float:
    b, g, r = bgr
    return 0.114 * b + 0.587 * g + 0.299 * r


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A textured background (h, w, 3) uint8: gradient + smooth noise + stripes + shapes + blur + grain.
    Colours are kept moderately saturated so the figures stand out. Built at half resolution and
    upscaled: the full-resolution float arithmetic was most of the generator's time."""
    def color():
        return _bgr(rng.uniform(0, 180), rng.uniform(0.0, 0.45), rng.uniform(0.15, 0.95))

    ws, hs = (w + 1) // 2, (h + 1) // 2
    a = rng.uniform(0, 2 * np.pi)
    x = np.linspace(0, 1, ws, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, hs, dtype=np.float32)[:, None]
    t = (x * math.cos(a) + y * math.sin(a))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c1, c2 = color().astype(np.float32), color().astype(np.float32)
    img = c1 + t[..., None] * (c2 - c1)
    cell = int(rng.integers(8, 48))
    blobs = rng.normal(0, rng.uniform(5, 30), (hs // cell + 2, ws // cell + 2, 3)).astype(np.float32)
    img += cv2.resize(blobs, (ws, hs), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.35:  # stripes (walls, fences, floors)
        b = rng.uniform(0, 2 * np.pi)
        period = rng.uniform(4, 30)
        phase = (x * ws * math.cos(b) + y * hs * math.sin(b)) * np.float32(2 * np.pi / period)
        img += (np.float32(rng.uniform(8, 30)) * np.sin(phase))[..., None]
    for _ in range(int(rng.integers(2, 12))):
        c = tuple(float(v) for v in color())
        kind = rng.integers(4)
        p = (int(rng.uniform(0, ws)), int(rng.uniform(0, hs)))
        if kind == 0:
            q = (int(rng.uniform(0, ws)), int(rng.uniform(0, hs)))
            cv2.rectangle(img, p, q, c, -1)
        elif kind == 1:
            axes = (int(rng.uniform(3, ws / 3)), int(rng.uniform(3, hs / 3)))
            cv2.ellipse(img, p, axes, float(rng.uniform(0, 180)), 0, 360, c, -1)
        elif kind == 2:
            q = (int(rng.uniform(0, ws)), int(rng.uniform(0, hs)))
            cv2.line(img, p, q, c, int(rng.integers(1, 5)))
        else:
            pts = rng.uniform([0, 0], [ws, hs], size=(int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], c)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.3))
    img += rng.standard_normal((hs, ws, 1), dtype=np.float32) * np.float32(rng.uniform(1, 8))
    small = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pt(p: np.ndarray) -> tuple[int, int]:
    """Continuous pixel coordinates -> cv2 fixed-point (cv2 puts integer coordinates at pixel centres)."""
    return (int(round((p[0] - 0.5) * 16)), int(round((p[1] - 0.5) * 16)))


class _Canvas:
    """An image plus a label map (int32, 0 = background) drawn with the same primitives."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.label = np.zeros(image.shape[:2], np.int32)

    def line(self, a, b, thick, color, outline, label, ow):
        a, b = _pt(a), _pt(b)
        thick = max(int(round(thick)), 1)
        if outline is not None:
            cv2.line(self.image, a, b, outline, thick + 2 * ow, _AA, _SHIFT)
        cv2.line(self.image, a, b, color, thick, _AA, _SHIFT)
        cv2.line(self.label, a, b, label, thick + 2 * ow, cv2.LINE_8, _SHIFT)

    def circle(self, c, r, color, outline, label, ow):
        c, r = _pt(c), max(int(round(r * 16)), 16)
        if outline is not None:
            cv2.circle(self.image, c, r + 16 * ow, outline, -1, _AA, _SHIFT)
        cv2.circle(self.image, c, r, color, -1, _AA, _SHIFT)
        cv2.circle(self.label, c, r + 16 * ow, label, -1, cv2.LINE_8, _SHIFT)


def _tube(cv: _Canvas, a, b, thick, color, label, ow):
    """A limb: dark outline, fill, and a thin lighter stripe off-centre that reads as shading."""
    color = np.asarray(color)
    cv.line(a, b, thick, tuple(color), tuple(color * 0.35), label, ow)
    d = np.asarray(b, float) - np.asarray(a, float)
    n = np.array([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    if n[1] > 0:  # light from above
        n = -n
    off = n * thick * 0.2
    light = tuple(np.minimum(color * 0.6 + 255 * 0.4, 255))
    cv2.line(cv.image, _pt(a + off), _pt(b + off), light, max(int(thick / 4), 1), _AA, _SHIFT)


def _shade(color: np.ndarray, side: int) -> np.ndarray:
    """The person's left (side 1) is a lighter shade of the clothing colour, the right (-1) a darker one."""
    return color + 0.45 * (255 - color) if side > 0 else color * 0.5


@dataclass
class Person:
    """A drawn person, all in continuous pixel coordinates of its image.

    joints (16, 2) MPII order; visible (16,) bool (not hidden by an occluder, another person or the
    person's own body); in_frame (16,) bool (inside the image; the annotated joints); head_box (4,)
    x1, y1, x2, y2 (0.6 x its diagonal ~ |head top - upper neck|); scale = person height / 200;
    objpos (2,) rough centre.
    """

    joints: np.ndarray
    visible: np.ndarray
    in_frame: np.ndarray
    head_box: np.ndarray
    scale: float
    objpos: np.ndarray


@dataclass
class Scene:
    """image and background: (H, W, 3) uint8 BGR (background = the image before any person was drawn);
    people: the drawn persons; label: (H, W) int32 part labels (person * 32 + part, 0 = background)."""

    image: np.ndarray
    background: np.ndarray
    people: list
    label: np.ndarray


# parts: name -> (label, joints it owns); a joint is visible when the label map shows one of its parts
_PARTS = {
    "torso": (1, ("r_shoulder", "l_shoulder", "r_hip", "l_hip", "pelvis", "thorax")),
    "neck": (2, ("thorax", "upper_neck")),
    "head": (3, ("upper_neck", "head_top")),
    "r_uarm": (4, ("r_shoulder", "r_elbow")), "r_farm": (5, ("r_elbow", "r_wrist")),
    "r_hand": (6, ("r_wrist",)),
    "l_uarm": (7, ("l_shoulder", "l_elbow")), "l_farm": (8, ("l_elbow", "l_wrist")),
    "l_hand": (9, ("l_wrist",)),
    # the thighs' round caps overlap the pelvis point: that is not an occlusion
    "r_thigh": (10, ("r_hip", "r_knee", "pelvis")), "r_shank": (11, ("r_knee", "r_ankle")),
    "r_foot": (12, ("r_ankle",)),
    "l_thigh": (13, ("l_hip", "l_knee", "pelvis")), "l_shank": (14, ("l_knee", "l_ankle")),
    "l_foot": (15, ("l_ankle",)),
}
_OWN = [frozenset(lab for lab, owned in _PARTS.values() if name in owned) for name in _M.joint_names]


def _draw_person(cv: _Canvas, rng, body: _Body, scale: float, origin: np.ndarray, pid: int) -> np.ndarray:
    """Draw one posed body at ``scale`` px per body height, ``origin`` = pixel of the pelvis. Returns the
    joints (16, 2) in continuous pixels."""
    proj = lambda p: origin + scale * np.array([p[..., 0], -p[..., 1]]).T  # noqa: E731 - y down in images
    j3 = body.joints
    j2 = proj(j3)
    jz = j3[:, 2]
    w = {k: v * scale for k, v in body.widths.items()}
    ow = max(int(round(0.008 * scale)), 1)

    region = cv.image[
        int(np.clip(j2[:, 1].min(), 0, cv.image.shape[0] - 1)):int(np.clip(j2[:, 1].max() + 1, 1, cv.image.shape[0])),
        int(np.clip(j2[:, 0].min(), 0, cv.image.shape[1] - 1)):int(np.clip(j2[:, 0].max() + 1, 1, cv.image.shape[1]))]
    bg = region[::3, ::3].reshape(-1, 3).mean(0) if region.size else np.full(3, 128.0)  # every 3rd px: enough

    def contrasting(sample, shades=(lambda c: c,)):
        # rejection sampling: the colour (and its left/right shades) must stand out from the local
        # background mean (Euclidean BGR distance), so every part contrasts wherever it is drawn
        best, best_d = None, -1.0
        for _ in range(30):
            c = sample()
            d = min(float(np.linalg.norm(f(c) - bg)) for f in shades)
            if d > best_d:
                best, best_d = c, d
            if d >= 70:
                break
        return best

    def cloth():
        return _bgr(rng.uniform(0, 180), rng.uniform(0.4, 1.0), rng.uniform(0.3, 1.0))

    lr = (lambda c: c, lambda c: _shade(c, 1), lambda c: _shade(c, -1))
    shirt, pants = contrasting(cloth, lr), contrasting(cloth, lr)
    skin = contrasting(lambda: np.array([rng.uniform(60, 190), rng.uniform(90, 205), rng.uniform(140, 245)])
                       * rng.uniform(0.75, 1.0))
    hair = contrasting(lambda: _bgr(rng.uniform(5, 25), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.6)))
    shoe = contrasting(lambda: _bgr(rng.uniform(0, 180), rng.uniform(0, 0.6), rng.uniform(0.05, 0.9)))
    J = _J
    lab = lambda part: pid * 32 + _PARTS[part][0]  # noqa: E731

    items = []  # (depth, draw function): painter's algorithm, far first (the camera looks down -z)

    def torso():
        quad = np.array([_pt(j2[J[n]]) for n in ("r_shoulder", "l_shoulder", "l_hip", "r_hip")], np.int32)
        out = tuple(shirt * 0.35)
        spine = (j2[J["thorax"]], j2[J["pelvis"]])
        girdle = (j2[J["r_shoulder"]], j2[J["l_shoulder"]])
        hips = (j2[J["r_hip"]], j2[J["l_hip"]])
        for (a, b), t in ((spine, w["torso"]), (girdle, w["girdle"]), (hips, w["thigh"])):
            cv.line(a, b, t, out, None, lab("torso"), ow)
            cv2.line(cv.image, _pt(a), _pt(b), out, int(round(t)) + 2 * ow, _AA, _SHIFT)
        cv2.polylines(cv.image, [quad], True, out, 2 * ow + 1, _AA, _SHIFT)
        cv2.fillConvexPoly(cv.label, quad, lab("torso"), cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(cv.image, quad, tuple(shirt), _AA, _SHIFT)
        cv2.line(cv.image, _pt(spine[0]), _pt(spine[1]), tuple(shirt), int(round(w["torso"])), _AA, _SHIFT)
        cv2.line(cv.image, _pt(girdle[0]), _pt(girdle[1]), tuple(shirt), int(round(w["girdle"])), _AA, _SHIFT)
        cv2.line(cv.image, _pt(hips[0]), _pt(hips[1]), tuple(pants), int(round(w["thigh"])), _AA, _SHIFT)
        badge = tuple(np.where(shirt > 127, 30.0, 235.0))
        if body.chest_normal[2] > 0.05:  # the front stripe: facing cue that survives a mirror flip
            quad = np.array([_pt(p) for p in proj(body.front_panel)], np.int32)
            cv2.fillConvexPoly(cv.image, quad, badge, _AA, _SHIFT)
        if body.chest_normal[2] > 0.25:  # badge on the left chest, seen from the front only
            cv2.circle(cv.image, _pt(proj(body.chest)), max(int(0.028 * scale * 16), 16), badge, -1, _AA, _SHIFT)

    # neck then head always after the torso: the torso's round caps would hide the upper neck otherwise
    z_torso = jz[[J["thorax"], J["pelvis"]]].mean()
    items.append((z_torso, torso))
    items.append((max(jz[[J["thorax"], J["upper_neck"]]].mean() - 0.01, z_torso + 1e-3),
                  lambda: cv.line(j2[J["thorax"]], j2[J["upper_neck"]], w["neck"], tuple(skin), tuple(skin * 0.35),
                                  lab("neck"), ow)))

    def head():
        # the skull sits on the top part of the segment; the upper neck point is on the neck below it
        c3 = j3[J["upper_neck"]] + 0.55 * (j3[J["head_top"]] - j3[J["upper_neck"]])
        r = w["head"]
        c = proj(c3)
        cv.circle(c, r, tuple(hair), tuple(hair * 0.3), lab("head"), ow)
        f = body.face
        blobs = [(proj(c3 - 0.3 * body.widths["head"] * f), 0.95 * r, hair),
                 (proj(c3 + 0.25 * body.widths["head"] * f), 0.9 * r, skin)]
        if f[2] < 0:  # seen from behind: the hair is nearer
            blobs.reverse()
        for p, rr, col in blobs:
            cv2.circle(cv.image, _pt(p), max(int(rr * 16), 16), tuple(col), -1, _AA, _SHIFT)
        if f[2] > -0.15:  # eyes and nose on the visible hemisphere
            hr = body.widths["head"]
            for k, dl, du, size, col in ((0, 0.38, 0.25, 0.11, (25, 25, 25)), (1, -0.38, 0.25, 0.11, (25, 25, 25)),
                                         (2, 0.0, -0.05, 0.13, tuple(skin * 0.6))):
                d = (0.92 if k < 2 else 1.0) * f + dl * body.head_left + du * body.head_up
                d /= np.linalg.norm(d)
                if d[2] > 0:
                    cv2.circle(cv.image, _pt(proj(c3 + hr * d)), max(int(size * r * 16), 16), col, -1, _AA, _SHIFT)

    items.append((max(jz[[J["upper_neck"], J["head_top"]]].mean() + 0.005, z_torso + 2e-3), head))

    for side, s in ((-1, "r"), (1, "l")):
        sleeve, leg = _shade(shirt, side), _shade(pants, side)
        sh, el, wr = J[f"{s}_shoulder"], J[f"{s}_elbow"], J[f"{s}_wrist"]
        hp, kn, an = J[f"{s}_hip"], J[f"{s}_knee"], J[f"{s}_ankle"]
        k = 0 if side < 0 else 1
        hand, foot = proj(body.hands[k]), proj(body.feet[k])
        for a, b, t, col, part in ((sh, el, w["uarm"], sleeve, "uarm"), (el, wr, w["farm"], sleeve, "farm"),
                                   (hp, kn, w["thigh"], leg, "thigh"), (kn, an, w["shank"], leg, "shank")):
            items.append((jz[[a, b]].mean() + 0.02,
                          lambda a=a, b=b, t=t, col=col, part=part, s=s:
                          _tube(cv, j2[a], j2[b], t, col, lab(f"{s}_{part}"), ow)))
        items.append((body.hands[k][2] + 0.02,
                      lambda hand=hand, s=s:
                      cv.circle(hand, w["hand"], tuple(skin), tuple(skin * 0.35), lab(f"{s}_hand"), ow)))
        # the foot goes just under its shank: the shoe's cap would cover the ankle point otherwise
        items.append((jz[[kn, an]].mean() + 0.02 - 1e-4, lambda an=an, foot=foot, s=s: cv.line(
            j2[an], foot, w["foot"], tuple(shoe), tuple(shoe * 0.35), lab(f"{s}_foot"), ow)))

    for _, draw in sorted(items, key=lambda it: it[0]):
        draw()
    return j2


def _occluder(cv: _Canvas, rng, center: np.ndarray, size: float) -> None:
    """A random solid shape (box, ellipse, polygon) in front of a person, with stripes for texture."""
    col = _bgr(rng.uniform(0, 180), rng.uniform(0, 0.7), rng.uniform(0.2, 0.9))
    mask = np.zeros(cv.image.shape[:2], np.uint8)
    kind = rng.integers(3)
    c = _pt(center)
    if kind == 0:
        box = ((float(center[0]), float(center[1])), (size * rng.uniform(0.5, 1.3), size * rng.uniform(0.3, 1.0)),
               float(rng.uniform(0, 180)))
        cv2.fillConvexPoly(mask, np.round(cv2.boxPoints(box) * 16).astype(np.int32), 255, cv2.LINE_8, _SHIFT)
    elif kind == 1:
        axes = (int(size * rng.uniform(0.25, 0.65) * 16), int(size * rng.uniform(0.2, 0.5) * 16))
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
    else:
        n = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = size * rng.uniform(0.25, 0.6, n)
        pts = center + np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        cv2.fillPoly(mask, [np.array([_pt(p) for p in pts], np.int32)], 255, cv2.LINE_8, _SHIFT)
    m = mask > 0
    if not m.any():
        return
    ys, xs = np.nonzero(m)
    stripes = 25 * np.sin((xs * rng.uniform(-0.5, 0.5) + ys * rng.uniform(-0.5, 0.5)))
    cv.image[ys, xs] = np.clip(col[None, :] + stripes[:, None], 0, 255).astype(np.uint8)
    cv.label[m] = _OCCLUDER


def _head_box(rng, joints: np.ndarray) -> np.ndarray:
    """An MPII-like axis-aligned head box around the head: 0.6 x its diagonal ~ |head top - upper neck|."""
    top, neck = joints[_J["head_top"]], joints[_J["upper_neck"]]
    length = float(np.linalg.norm(top - neck))
    aspect = rng.uniform(0.85, 1.15)
    side = length * rng.uniform(0.95, 1.05) / (0.6 * math.sqrt(aspect + 1 / aspect))
    half = np.array([side * math.sqrt(aspect), side / math.sqrt(aspect)]) / 2
    c = (top + neck) / 2 + rng.normal(0, 0.03 * length, 2)
    return np.concatenate([c - half, c + half]).astype(np.float32)


def render_scene(rng: np.random.Generator, width: int, height: int, num_people: int = 1, *,
                 out_of_frame: float = 0.0, occluder: float = 0.3, min_height: float = 60.0) -> Scene:
    """Draw ``num_people`` people over a textured background.

    Args:
        rng: the only source of randomness (same state = same scene).
        width, height: image size in pixels.
        num_people: people side by side (each in its own horizontal slot).
        out_of_frame: probability that a person is shifted partly out of the image.
        occluder: probability that a random shape hides part of a person.
        min_height: smallest person height in pixels.
    Returns:
        a ``Scene``; joints of people not shifted out lie inside the image with a margin.
    """
    background = _background(rng, width, height)
    cv = _Canvas(background.copy())
    people = []
    slot = width / num_people
    for pid in range(num_people):
        body = _sample_body(rng)
        xy = body.joints[:, :2] * np.array([1, -1])
        extra = np.concatenate([body.hands[:, :2], body.feet[:, :2]]) * np.array([1, -1])
        pts = np.concatenate([xy, extra])
        lo, hi = pts.min(0) - 0.08, pts.max(0) + 0.08  # head, hands, thickness
        size = hi - lo
        fit = min(slot / size[0], height / size[1])
        scale = max(fit * rng.uniform(0.45 if num_people > 1 else 0.55, 0.95), min_height)
        free = np.array([slot, height]) - size * scale
        corner = np.array([pid * slot, 0.0]) + rng.uniform(0, 1, 2) * np.maximum(free, 0)
        if rng.random() < out_of_frame:
            if rng.random() < 0.6:  # legs cut off at the bottom, the commonest case in photos
                corner[1] = height - size[1] * scale * rng.uniform(0.55, 0.85)
            else:
                shift = size[0] * scale * rng.uniform(0.2, 0.5)
                corner[0] = -shift if rng.random() < 0.5 else width - size[0] * scale + shift
        origin = corner - lo * scale
        joints = _draw_person(cv, rng, body, scale, origin, pid + 1)
        if rng.random() < occluder:
            target = joints[rng.integers(_K)]
            _occluder(cv, rng, target + rng.normal(0, 0.05 * scale, 2), scale * rng.uniform(0.15, 0.4))
        in_frame = (joints[:, 0] >= 0) & (joints[:, 0] < width) & (joints[:, 1] >= 0) & (joints[:, 1] < height)
        people.append(dict(joints=joints, in_frame=in_frame, pid=pid + 1, scale=scale, head_box=_head_box(rng, joints)))

    result = []
    for p in people:
        joints, in_frame = p["joints"], p["in_frame"]
        visible = np.zeros(_K, bool)
        for k in np.nonzero(in_frame)[0]:
            lab = cv.label[int(joints[k, 1]), int(joints[k, 0])]
            visible[k] = lab // 32 == p["pid"] and lab % 32 in _OWN[k]
        xs, ys = joints[:, 0], joints[:, 1]
        objpos = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
        objpos += rng.normal(0, 0.03 * p["scale"], 2)
        result.append(Person(joints=joints.astype(np.float32), visible=visible, in_frame=in_frame,
                             head_box=p["head_box"], scale=float(p["scale"] * 1.05 / 200),
                             objpos=objpos.astype(np.float32)))
    return Scene(image=cv.image, background=background, people=result, label=cv.label)


# ----------------------------------------------------------------------------------------------
# rendering many images (optionally in a pool of processes, deterministic per image)
_FORMAT_CODE = {"lsp": 1, "lspet": 2, "mpii": 3}


@dataclass(frozen=True)
class _Spec:
    fmt: str
    seed: int
    folder: str
    sizes: tuple
    people_p: tuple  # probabilities of 1, 2, 3 ... people
    out_of_frame: float
    occluder: float


def _render_one(spec: _Spec, index: int, name: str) -> tuple[list, tuple[int, int], int]:
    rng = np.random.default_rng([spec.seed, _FORMAT_CODE[spec.fmt], index])
    w, h = spec.sizes[rng.integers(len(spec.sizes))]
    n = int(rng.choice(len(spec.people_p), p=spec.people_p)) + 1
    for _ in range(20):
        scene = render_scene(rng, w, h, n, out_of_frame=spec.out_of_frame, occluder=spec.occluder)
        if spec.out_of_frame > 0 or all(p.in_frame.all() for p in scene.people):
            break
    else:  # pragma: no cover - placement keeps people inside; this guards the LSP format's promise
        raise RuntimeError(f"could not place a person inside {w}x{h} image {index}")
    ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:  # pragma: no cover
        raise RuntimeError(f"JPEG encoding failed for image {index}")
    (Path(spec.folder) / name).write_bytes(buf.tobytes())
    return scene.people, (w, h), len(buf)


def _render_task(args):
    return _render_one(*args)


def _init_worker():
    cv2.setNumThreads(1)  # one process per core already
    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker would only print a
    # traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _render_all(spec: _Spec, names: list[str], workers: int | None, progress: bool | None = None) -> list:
    """Render and write every image; returns ``[(people, (w, h), nbytes)]`` in image order. ``progress``:
    a bar on stderr (None: only on a terminal). Leaving early (Ctrl-C) terminates the worker processes."""
    Path(spec.folder).mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(names) >= 400 else 1
    tasks = [(spec, i, name) for i, name in enumerate(names)]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; progress is only cosmetic
        tqdm = lambda it, **kw: it  # noqa: E731
    bar = dict(total=len(tasks), desc=f"generating synthetic {spec.fmt}", unit="img",
               disable=None if progress is None else not progress, leave=False)
    if workers <= 1:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            return [_render_task(t) for t in tqdm(tasks, **bar)]
        finally:
            cv2.setNumThreads(threads)
    # forkserver: a clean process, safe even when the caller has TensorFlow or DALI threads running
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(_render_task, tasks, chunksize=16), **bar))


# ----------------------------------------------------------------------------------------------
# ground truth
@dataclass
class Truth:
    """What a writer drew, per person (N people, K joints of the written format: 14 LSP, 16 MPII).

    Attributes:
        fmt: ``"lsp"``, ``"lspet"`` or ``"mpii"``.
        image_names: (N,) str, file names under ``images/``.
        image_index: (N,) int64, the image's position in the annotation file (0-based).
        rect_index: (N,) int64, the person's ``annorect`` index in its image (0-based; 0 for LSP).
        joints: (N, K, 2) float32, continuous pixels; NaN where not annotated (out of frame).
        visible: (N, K) bool, drawn visible (False where not annotated).
        visible_flag: (N, K) int8, what the file says: 1, 0; -1 = MPII ``is_visible`` left empty;
            -2 = not annotated.
        head_box: (N, 4) float32 x1, y1, x2, y2, continuous pixels (in the file for MPII only).
        annotated: (N,) bool, the person's joints are in the file (MPII: train image with annopoints).
        image_size: (N, 2) int64 W, H.
    """

    fmt: str
    image_names: np.ndarray
    image_index: np.ndarray
    rect_index: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    visible_flag: np.ndarray
    head_box: np.ndarray
    annotated: np.ndarray
    image_size: np.ndarray

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(path, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def load(cls, root_or_file: str | os.PathLike) -> "Truth":
        """Load ``synthetic_truth.npz`` (give the file or the folder holding it)."""
        path = Path(root_or_file)
        if path.is_dir():
            path = path / TRUTH_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no synthetic ground truth (written by deeppose_fast.datasets.synthetic)")
        with np.load(path, allow_pickle=False) as z:
            kw = {f.name: z[f.name] for f in fields(cls)}
        kw["fmt"] = str(kw["fmt"])
        return cls(**kw)


def _truth(fmt: str, names: list[str], rendered: list, joint_index: np.ndarray, annotated_fn=None,
           flags=None) -> Truth:
    rows = []
    for i, (people, size, _) in enumerate(rendered):
        for r, p in enumerate(people):
            rows.append((i, r, p, size))
    n, k = len(rows), len(joint_index)
    joints = np.full((n, k, 2), np.nan, np.float32)
    visible = np.zeros((n, k), bool)
    head_box = np.zeros((n, 4), np.float32)
    annotated = np.ones(n, bool)
    for row, (i, r, p, _) in enumerate(rows):
        inside = p.in_frame[joint_index]
        joints[row][inside] = p.joints[joint_index][inside]
        visible[row] = p.visible[joint_index] & inside
        head_box[row] = p.head_box
        if annotated_fn is not None:
            annotated[row] = annotated_fn(i, r)
    if flags is None:
        flags = np.where(np.isnan(joints[..., 0]), -2, visible.astype(np.int8)).astype(np.int8)
    return Truth(fmt=fmt, image_names=np.array([names[i] for i, *_ in rows], dtype=str),
                 image_index=np.array([i for i, *_ in rows], np.int64),
                 rect_index=np.array([r for _, r, *_ in rows], np.int64),
                 joints=joints, visible=visible, visible_flag=flags, head_box=head_box, annotated=annotated,
                 image_size=np.array([s for *_, s in rows], np.int64).reshape(n, 2))


def _savemat(path: Path, data: dict) -> None:
    """scipy.io.savemat with a fixed header text (it writes the creation date otherwise)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, data, do_compression=True, oned_as="row")
    raw = bytearray(buf.getvalue())
    raw[:116] = _MAT_HEADER.ljust(116, b" ")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(raw))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# writers
def write_lsp(root: str | os.PathLike, num_images: int = 2000, seed: int = 0, *, workers: int | None = None,
              progress: bool | None = None) -> Truth:
    """Write an LSP-format data set: ``images/imNNNN.jpg`` (4 digits, from im0001) and ``joints.mat`` with
    ``joints`` (3, 14, N): rows x, y (1-based pixels, ``x_file = x + 0.5``) and the flag
    ``1 - visible`` ("occluded"). One person per image, every joint inside the image (LSP annotates all).
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``)."""
    if not 1 <= num_images <= 9999:
        raise ValueError(f"LSP names have 4 digits: num_images must be in 1..9999, got {num_images}")
    root = Path(root)
    names = [f"im{i + 1:04d}.jpg" for i in range(num_images)]
    spec = _Spec("lsp", seed, str(root / "images"), LSP_IMAGE_SIZES, (1.0,), out_of_frame=0.0, occluder=0.3)
    rendered = _render_all(spec, names, workers, progress)
    truth = _truth("lsp", names, rendered, LSP_FROM_MPII)
    joints = np.zeros((3, 14, num_images))
    joints[:2] = (truth.joints + 0.5).transpose(2, 1, 0)
    joints[2] = 1 - truth.visible.T
    _savemat(root / "joints.mat", {"joints": joints})
    truth.save(root / TRUTH_FILE)
    return truth


def write_lspet(root: str | os.PathLike, num_images: int = 10000, seed: int = 0, *,
                workers: int | None = None, progress: bool | None = None) -> Truth:
    """Write an LSP-extended-format data set: ``images/imNNNNN.jpg`` (5 digits) and ``joints.mat`` with
    ``joints`` (14, 3, N): columns x, y (1-based pixels) and the flag ``visible``. Joints out of the frame
    are not annotated: they carry coordinates <= 0 (0 or negative, as in the real file) and flag 0.
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``)."""
    if not 1 <= num_images <= 99999:
        raise ValueError(f"LSPET names have 5 digits: num_images must be in 1..99999, got {num_images}")
    root = Path(root)
    names = [f"im{i + 1:05d}.jpg" for i in range(num_images)]
    spec = _Spec("lspet", seed, str(root / "images"), LSP_IMAGE_SIZES, (1.0,), out_of_frame=0.15, occluder=0.3)
    rendered = _render_all(spec, names, workers, progress)
    truth = _truth("lspet", names, rendered, LSP_FROM_MPII)
    joints = np.zeros((14, 3, num_images))
    joints[:, :2] = (truth.joints + 0.5).transpose(1, 2, 0)
    joints[:, 2] = truth.visible.T
    missing = np.isnan(truth.joints[..., 0]).T  # (14, N)
    rng = np.random.default_rng([seed, 99])
    joints[:, 0][missing] = np.where(rng.random(missing.sum()) < 0.5, 0.0, -rng.integers(1, 50, missing.sum()))
    joints[:, 1][missing] = np.where(rng.random(missing.sum()) < 0.5, 0.0, -rng.integers(1, 50, missing.sum()))
    joints[:, 2][missing] = 0
    _savemat(root / "joints.mat", {"joints": joints})
    truth.save(root / TRUTH_FILE)
    return truth


_ACTS = (("sports", "running", 1), ("dancing", "ballet", 2), ("walking", "walking, general", 3),
         ("occupation", "standing, talking", 4), ("home activities", "sitting quietly", 5),
         ("conditioning exercise", "stretching", 6))


def _struct_array(records: list[dict], names: tuple[str, ...]) -> np.ndarray:
    """A 1 x n MATLAB struct array (savemat writes structured object arrays as struct arrays)."""
    arr = np.zeros((1, len(records)), dtype=[(n, object) for n in names])
    for i, rec in enumerate(records):
        for n in names:
            arr[0, i][n] = rec.get(n, np.zeros((0, 0)))
    return arr


def write_mpii(root: str | os.PathLike, num_images: int = 2400, seed: int = 0, *,
               image_size: tuple[int, int] = (480, 360), people_per_image: tuple[float, ...] = (0.6, 0.25, 0.15),
               train_fraction: float = 0.85, out_of_frame: float = 0.12, workers: int | None = None,
               progress: bool | None = None) -> Truth:
    """Write an MPII-format data set: ``images/NNNNNNNNN.jpg`` and ``mpii_human_pose_v1_u12_1.mat`` holding
    the struct ``RELEASE`` (``annolist``, ``img_train``, ``single_person``, ``act``, ``version``), with the
    real file's quirks: 1 or several people per image (a single one loads as a struct, not an array, with
    ``squeeze_me``), points in arbitrary order and absent where not annotated (out of frame),
    ``is_visible`` numeric, a string (``'1'``) or empty (some upper-neck / head-top points), test images
    (``img_train = 0``) whose rects have only ``scale`` and ``objpos``, and a few train-image rects without
    ``annopoints``. Coordinates are 1-based pixels (``x_file = x + 0.5``), the head box included.

    Args:
        image_size: (W, H) of every image (MPII's are mostly 1280 x 720; smaller is faster here).
        people_per_image: probabilities of 1, 2, 3 ... people in an image.
        train_fraction: share of images with ``img_train = 1``.
        out_of_frame: probability that a person is partly out of the image.
    Returns the ``Truth`` (also saved as ``synthetic_truth.npz``).
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    root = Path(root)
    file_rng = np.random.default_rng([seed, _FORMAT_CODE["mpii"], 10 ** 6])
    # real MPII names are scattered 9-digit numbers: the parser must take them from the file
    ids = file_rng.choice(10 ** 9 - 1, size=num_images, replace=False) + 1
    names = [f"{i:09d}.jpg" for i in ids]
    p = np.asarray(people_per_image, float)
    spec = _Spec("mpii", seed, str(root / "images"), (tuple(image_size),), tuple(p / p.sum()),
                 out_of_frame=out_of_frame, occluder=0.3)
    rendered = _render_all(spec, names, workers, progress)
    img_train = file_rng.random(num_images) < train_fraction
    no_points = {(i, r) for i, (people, *_) in enumerate(rendered) for r in range(len(people))
                 if file_rng.random() < 0.03}
    annotated_fn = lambda i, r: bool(img_train[i]) and (i, r) not in no_points  # noqa: E731
    truth = _truth("mpii", names, rendered, np.arange(_K), annotated_fn)
    truth.visible_flag[~truth.annotated] = -2  # the file holds no points for these people

    annolist, single_person, acts = [], [], []
    row = 0
    for i, (people, _, _) in enumerate(rendered):
        rects = []
        for r, person in enumerate(people):
            objpos = {"x": float(person.objpos[0] + 0.5), "y": float(person.objpos[1] + 0.5)}
            rect = {"scale": float(person.scale), "objpos": objpos}
            if img_train[i]:
                x1, y1, x2, y2 = (person.head_box + 0.5).tolist()
                rect.update(x1=x1, y1=y1, x2=x2, y2=y2)
                if (i, r) not in no_points:
                    points = []
                    for k in file_rng.permutation(_K):
                        if not person.in_frame[k]:
                            continue  # not annotated: simply absent
                        vis = int(person.visible[k])
                        u = file_rng.random()
                        if k in (_J["upper_neck"], _J["head_top"]) and u < 0.15:
                            flag, truth.visible_flag[row, k] = np.zeros((0, 0)), -1
                        elif u < 0.3:
                            flag = str(vis)
                        else:
                            flag = float(vis)
                        points.append({"id": float(k), "x": float(person.joints[k, 0] + 0.5),
                                       "y": float(person.joints[k, 1] + 0.5), "is_visible": flag})
                    rect["annopoints"] = {"point": _struct_array(points, ("id", "x", "y", "is_visible"))}
            rects.append(rect)
            row += 1
        names_r = ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos") if img_train[i] else ("scale", "objpos")
        annolist.append({"image": {"name": names[i]}, "annorect": _struct_array(rects, names_r),
                         "frame_sec": np.zeros((0, 0)), "vididx": np.zeros((0, 0))})
        # single_person: rects far enough from every other (1-based, a column)
        centers = np.array([pp.objpos for pp in people])
        heights = np.array([pp.scale * 200 for pp in people])
        alone = [r + 1 for r in range(len(people))
                 if all(abs(centers[r, 0] - centers[q, 0]) > 0.6 * (heights[r] + heights[q]) / 2
                        for q in range(len(people)) if q != r)]
        single_person.append(np.array(alone, float).reshape(-1, 1) if alone else np.zeros((0, 0)))
        cat, act, act_id = _ACTS[file_rng.integers(len(_ACTS))] if file_rng.random() < 0.8 else ("", "", -1)
        acts.append({"cat_name": cat, "act_name": act, "act_id": float(act_id)})

    sp = np.empty((num_images, 1), dtype=object)
    for i, v in enumerate(single_person):
        sp[i, 0] = v
    act_arr = _struct_array(acts, ("cat_name", "act_name", "act_id")).reshape(-1, 1)
    release = {
        "annolist": _struct_array(annolist, ("image", "annorect", "frame_sec", "vididx")),
        "img_train": img_train.astype(float)[None, :],
        "version": "12",
        "single_person": sp,
        "act": act_arr,
        "video_list": np.array([["synthetic"]], dtype=object),
    }
    _savemat(root / MPII_MAT, {"RELEASE": release})
    truth.save(root / TRUTH_FILE)
    return truth


WRITERS = {"lsp": write_lsp, "lspet": write_lspet, "mpii": write_mpii}


def generate(root: str | os.PathLike, fmt: str = "mpii", preset: str = "small", seed: int = 0, *,
             num_images: int | None = None, workers: int | None = None, progress: bool | None = None) -> Truth:
    """Write a synthetic data set of a preset size (``PRESETS``) in one of the official formats.

    Args:
        workers: processes rendering images (None: 2 for 400 images or more, else 1).
        progress: a bar of images written on stderr; None shows it only on a terminal.
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(WRITERS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    n = PRESETS[preset][fmt] if num_images is None else num_images
    kw = {"image_size": MPII_IMAGE_SIZE[preset]} if fmt == "mpii" else {}
    return WRITERS[fmt](root, n, seed, workers=workers, progress=progress, **kw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="output folder")
    parser.add_argument("--format", choices=sorted(WRITERS), default="mpii")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--num-images", type=int, default=None, help="overrides the preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: 2 for large sets)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    truth = generate(args.root, args.format, args.preset, args.seed, num_images=args.num_images,
                     workers=args.workers)
    dt = time.perf_counter() - t0
    n_img = len(set(truth.image_index.tolist()))
    print(f"{args.root}: {n_img} images, {len(truth.image_index)} people "
          f"({int(truth.annotated.sum())} annotated) in {dt:.1f} s ({n_img / dt:.0f} images/s)")


if __name__ == "__main__":
    main()
