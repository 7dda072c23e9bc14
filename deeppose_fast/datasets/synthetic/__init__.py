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

Modules: ``body`` (the posed 3D person), ``render`` (one scene drawn), ``formats`` (images and annotation
files of the official formats, ``Truth``, ``generate``). Command line: ``deeppose-fast synthetic OUT
--format lsp|lspet|mpii --scale small|mpii|real`` (``prepare synthetic`` generates the MPII format itself).
"""
from deeppose_fast.datasets.synthetic.formats import (LSP_FROM_MPII, MPII_MAT, SCALES, TRUTH_FILE, WRITERS,
                                                      Truth, generate, write_lsp, write_lspet, write_mpii)
from deeppose_fast.datasets.synthetic.render import Person, Scene, render_scene

__all__ = ["LSP_FROM_MPII", "MPII_MAT", "SCALES", "TRUTH_FILE", "WRITERS", "Person", "Scene", "Truth",
           "generate", "render_scene", "write_lsp", "write_lspet", "write_mpii"]
