"""Drawing one synthetic scene (``render_scene``): people posed by ``body`` projected orthographically and
drawn with OpenCV as thick shaded, outlined segments (anti-aliased) over a textured background, with the
cues that tell left from right (see ``deeppose_fast.datasets.synthetic``), occluders, and a part label map
that decides which joints are visible. Coordinates are continuous pixels (pixel ``i`` covers ``[i, i+1)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from deeppose_fast import skeleton
from deeppose_fast.datasets.synthetic.body import JOINTS as _J
from deeppose_fast.datasets.synthetic.body import NUM_JOINTS as _K
from deeppose_fast.datasets.synthetic.body import Body, sample_body

_SHIFT = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
_AA = cv2.LINE_AA
_OCCLUDER = 1 << 20  # label of occluders in the label map (people use person * 32 + part)


# ----------------------------------------------------------------------------------------------
# drawing
def _bgr(h: float, s: float, v: float) -> np.ndarray:
    """HSV (h in [0, 180), s, v in [0, 1]) -> BGR float (3,)."""
    px = np.uint8([[[int(h) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)



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
_OWN = [frozenset(lab for lab, owned in _PARTS.values() if name in owned) for name in skeleton.MPII.joint_names]


def _draw_person(cv: _Canvas, rng, body: Body, scale: float, origin: np.ndarray, pid: int) -> np.ndarray:
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
        body = sample_body(rng)
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
