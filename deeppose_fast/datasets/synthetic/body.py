"""The synthetic person's body: a 3D kinematic tree (pelvis, spine/thorax, neck, head, shoulders, elbows,
wrists, hips, knees, ankles) with plausible limb-length ratios and joint-angle ranges, posed and turned to a
random facing direction (``sample_body``). Joints in ``skeleton.MPII`` order, units of body height."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deeppose_fast import skeleton

JOINTS = {name: i for i, name in enumerate(skeleton.MPII.joint_names)}  # MPII joint name -> index
NUM_JOINTS = skeleton.MPII.num_joints
_J, _K = JOINTS, NUM_JOINTS
# pose mix (probabilities): relaxed arms (else anything from raised to reaching back); standing, dynamic
# (walking, running, kicking), else sitting / crouching; facing the camera within ~30 deg (else any yaw);
# any in-plane roll (lying, upside down; else within ~8 deg). Varied, yet learnable by a small network in
# minutes: the mean pose alone scores symmetric PCKh@0.5 ~0.40 on eval crops (0.33 with 8 % any roll,
# 60 % facing, 70 % relaxed arms).
_POSE_MIX = dict(arms_relaxed=0.75, standing=0.65, dynamic=0.2, facing_front=0.7, any_roll=0.03)


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
class Body:
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


def sample_body(rng: np.random.Generator) -> Body:
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
    return Body(
        joints=t(j), face=r_g @ r_face @ z_axis, head_left=r_g @ r_face @ x_axis, head_up=r_g @ r_head @ y_axis,
        chest=t(chest), chest_normal=r_g @ r_upper @ z_axis, front_panel=t(np.array(panel)), hands=t(hands), feet=t(feet),
        widths={"uarm": 0.06, "farm": 0.048, "thigh": 0.085, "shank": 0.065, "neck": 0.055,
                "torso": 0.15 * width, "girdle": 0.07 * width, "hand": 0.028, "foot": 0.04,
                "head": 0.47 * head},
    )
