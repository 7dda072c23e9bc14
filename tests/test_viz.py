"""Pose pictures: the whole skeleton is drawn (limbs joined by the shoulders and hips lines and the neck),
with the person's side in its colour, and the prediction picture adds its boxes and a colour legend below."""
from __future__ import annotations

import numpy as np
import pytest

from deeppose_fast import skeleton, viz

# A star-shaped person on a 300 x 300 canvas, arms and legs spread so that no two segments meet near the
# points sampled below (image x grows to the right: the person's right side is on the image's left).
POSE = {"head_top": (150, 20), "upper_neck": (150, 60), "neck": (150, 60), "thorax": (150, 80),
        "r_shoulder": (110, 90), "l_shoulder": (190, 90), "r_elbow": (60, 100), "l_elbow": (240, 100),
        "r_wrist": (20, 120), "l_wrist": (280, 120), "pelvis": (150, 170), "r_hip": (125, 180),
        "l_hip": (175, 180), "r_knee": (110, 230), "l_knee": (190, 230), "r_ankle": (100, 285),
        "l_ankle": (200, 285)}

LIMBS = [("r_shoulder", "r_elbow", "right"), ("r_elbow", "r_wrist", "right"), ("r_hip", "r_knee", "right"),
         ("r_knee", "r_ankle", "right"), ("l_shoulder", "l_elbow", "left"), ("l_elbow", "l_wrist", "left"),
         ("l_hip", "l_knee", "left"), ("l_knee", "l_ankle", "left")]
SHOULDERS, HIPS = ("r_shoulder", "l_shoulder"), ("r_hip", "l_hip")
# the segments that join the limbs into one figure; a tuple endpoint is the middle of those joints
TRUNK = {"lsp": [(SHOULDERS[0], SHOULDERS[1]), (HIPS[0], HIPS[1]), ("head_top", "neck"), ("neck", SHOULDERS),
                 (SHOULDERS, HIPS)],
         "mpii": [(SHOULDERS[0], SHOULDERS[1]), (HIPS[0], HIPS[1]), ("head_top", "upper_neck"),
                  ("upper_neck", "thorax"), ("thorax", "pelvis")]}


def _point(end):
    names = end if isinstance(end, tuple) else (end,)
    return np.mean([POSE[n] for n in names], axis=0)


def _colour_name(bgr) -> str:
    """The dominant channel of a drawn pixel: red, green or blue (black when nothing was drawn)."""
    b, g, r = (int(v) for v in bgr)
    if max(b, g, r) < 100:
        return "black"
    return {0: "blue", 1: "green", 2: "red"}[int(np.argmax([b, g, r]))]


def _edge_points(x0, y0, w, h):
    """(column, row) of a pixel on each edge of a box: the outermost pixels inside it, half-way down the
    sides and 9/10 along the top and bottom (clear of the figure)."""
    return [(x0, y0 + h // 2), (x0 + w - 1, y0 + h // 2), (x0 + 9 * w // 10, y0), (x0 + 9 * w // 10, y0 + h - 1)]


def _joints(sk):
    return np.array([POSE[n] for n in sk.joint_names], np.float64)


@pytest.mark.parametrize("name", ["lsp", "mpii"])
def test_the_whole_skeleton_is_drawn_in_side_colours(name):
    sk = skeleton.get(name)
    drawn = viz.draw_skeleton(np.zeros((300, 300, 3), np.uint8), _joints(sk), sk, thickness=3)
    expected = [(a, b, {"right": "red", "left": "blue"}[side]) for a, b, side in LIMBS]
    expected += [(a, b, "green") for a, b in TRUNK[name]]  # the centre line, shoulders and hips lines
    for a, b, colour in expected:
        for f in (0.3, 0.6):  # two points along each segment, clear of the joint dots
            x, y = _point(a) + f * (_point(b) - _point(a))
            assert _colour_name(drawn[int(y), int(x)]) == colour, (name, a, b, f)
    # nowhere else: a point between the arm and the head stays untouched
    assert _colour_name(drawn[40, 60]) == "black"


def test_missing_joints_leave_their_segments_out():
    sk = skeleton.MPII
    joints = _joints(sk)
    joints[sk.index("l_hip")] = np.nan
    drawn = viz.draw_skeleton(np.zeros((300, 300, 3), np.uint8), joints, sk, thickness=3)
    for a, b in [HIPS, ("l_hip", "l_knee")]:
        x, y = _point(a) + 0.6 * (_point(b) - _point(a))
        assert _colour_name(drawn[int(y), int(x)]) == "black", (a, b)


def test_prediction_picture_has_boxes_and_a_legend():
    sk = skeleton.MPII
    canvas = np.zeros((300, 300, 3), np.uint8)
    crop, box = (30, 8, 240, 284), (50, 40, 250, 278)  # x0, y0, w, h and x1, y1, x2, y2
    drawn = viz.draw_pose(canvas, _joints(sk), sk, crop_box=crop, box=box, thickness=4)

    def is_yellow(p):
        return p[0] < 100 and p[1] > 150 and p[2] > 150

    def is_magenta(p):
        return p[0] > 150 and p[1] < 120 and p[2] > 150

    # each edge of each box, on the box's outermost pixels inside
    for col, row in _edge_points(*crop):
        assert is_yellow(drawn[row, col]), (col, row, drawn[row, col])
    x1, y1, x2, y2 = box
    for col, row in _edge_points(x1, y1, x2 - x1, y2 - y1):
        assert is_magenta(drawn[row, col]), (col, row, drawn[row, col])
    # the legend, in a white strip below the picture: swatches of the side and box colours, and text
    assert drawn.shape[0] > canvas.shape[0] and drawn.shape[1] == canvas.shape[1]
    strip = drawn[canvas.shape[0]:].reshape(-1, 3)
    assert {"red", "green", "blue"} <= {_colour_name(p) for p in strip}
    assert any(is_yellow(p) for p in strip) and any(is_magenta(p) for p in strip)
    assert (strip.max(axis=1) < 80).any() and (strip.min(axis=1) > 240).mean() > 0.5  # dark text on white
    # the skeleton is there too, and the input image is untouched
    x, y = _point(SHOULDERS[0]) + 0.3 * (_point(SHOULDERS[1]) - _point(SHOULDERS[0]))
    assert _colour_name(drawn[int(y), int(x)]) == "green"
    assert not canvas.any()


def test_the_legend_wraps_in_a_narrow_image():
    sk = skeleton.LSP
    narrow = viz.draw_pose(np.zeros((200, 60, 3), np.uint8), np.full((sk.num_joints, 2), np.nan), sk,
                           crop_box=(0, 0, 60, 200))
    wide = viz.draw_pose(np.zeros((200, 600, 3), np.uint8), np.full((sk.num_joints, 2), np.nan), sk,
                         crop_box=(0, 0, 600, 200))
    assert narrow.shape[0] - 200 > 2 * (wide.shape[0] - 200)  # several rows instead of one
    assert {"red", "green", "blue"} <= {_colour_name(p) for p in narrow[200:].reshape(-1, 3)}
