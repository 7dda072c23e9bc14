"""The pre-crop (deeppose_fast.datasets.precrop): the region rule against the codec's crops, its sizing
from an AugmentSpec and prepare's options, and the contract ``require_covers`` that train and show check."""
from __future__ import annotations

import dataclasses
import math
import shlex

import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.commands.prepare import command as prepare_command
from deeppose_fast.datasets import DatasetError, DatasetWarning, shards
from deeppose_fast.datasets.prepare import prepare
from deeppose_fast.datasets.precrop import PrecropRule, require_covers
from deeppose_fast.specs import AugmentSpec


def test_precrop_region_hand_computed():
    joints = np.array([[100, 100], [200, 300], [np.nan, np.nan]], np.float32)
    rule = PrecropRule()
    # box 100 x 200 centred (150, 200); half-sides 0.5*200 + 0.1*200 + 0.05*100 + 2 = 127 and
    # 0.5*400 + 0.1*400 + 0.05*200 + 2 = 252
    assert rule.region(joints, 1000, 1000) == (23, 0, 277, 452)
    assert rule.region(joints, 250, 400) == (23, 0, 250, 400)  # clipped to the image
    assert rule.region(joints + 5000, 1000, 1000) is None  # entirely outside


@pytest.mark.parametrize("rotation, jitter", [(0.0, 0.0), (30.0, 0.2)])
def test_precrop_contains_every_recipe_crop(rotation, jitter):
    """Any crop the codec draws (ext up to 2.0, shift 10 %, rotation and zoom-out within the rule),
    clipped to the image, is the same crop clipped to the pre-crop: same box and decoded region after
    the offset, same targets."""
    rng = np.random.default_rng(0)
    rule = PrecropRule(rotation=rotation, scale_jitter=jitter)
    for _ in range(300):
        W, H = int(rng.integers(200, 1300)), int(rng.integers(200, 900))
        k = 16
        joints = np.stack([rng.uniform(-50, W + 50, k), rng.uniform(-50, H + 50, k)], 1).astype(np.float32)
        joints = (joints - joints.mean(0)) * rng.uniform(0.05, 0.6) + [rng.uniform(0, W), rng.uniform(0, H)]
        joints[rng.random(k) < 0.2] = np.nan
        if not np.isfinite(joints).all(1).any():
            continue
        region = rule.region(joints, W, H)
        if region is None:
            continue
        x0, y0, x1, y1 = region
        annotated = np.isfinite(joints).all(1)
        pose = np.zeros((k, 4), np.float32)
        pose[annotated, :2] = joints[annotated]
        pose[:, 2] = annotated
        local = pose.copy()
        local[annotated, :2] -= np.float32([x0, y0])
        draws = codec.sample_draws(rng, 1, AugmentSpec(ext_min=1.0, ext_max=2.0, flip=False, rotation=rotation,
                                                       scale_jitter=jitter))[0]
        full = codec.crop_geometry(pose, (H, W), draws, size=227)
        cut = codec.crop_geometry(local, (y1 - y0, x1 - x0), draws, size=227)
        np.testing.assert_allclose(cut.crop_box[:2] + [x0, y0], full.crop_box[:2], atol=2e-3)
        np.testing.assert_allclose(cut.crop_box[2:], full.crop_box[2:], atol=2e-3)
        np.testing.assert_allclose(cut.targets, full.targets, atol=1e-4)
        np.testing.assert_array_equal(cut.anchor + [x0, y0], full.anchor)
        np.testing.assert_array_equal(cut.shape, full.shape)
        np.testing.assert_array_equal(cut.weights, full.weights)


def test_rule_from_augment_and_prepare_options():
    """prepare's options size the rule through an AugmentSpec and the input size; rotation beyond 90
    needs no more room."""
    augment = AugmentSpec(ext_min=1.2, ext_max=2.5, shift=0.2, rotation=30.0, scale_jitter=0.1)
    assert PrecropRule.from_augment(augment, 300, jpeg_quality=80, resolution_margin=0.5) == PrecropRule(
        ext_max=2.5, shift=0.2, rotation=30.0, scale_jitter=0.1, jpeg_quality=80, ext_min=1.2, resolution=300,
        resolution_margin=0.5)
    assert PrecropRule.from_augment(AugmentSpec(rotation=135.0)).rotation == 90.0
    assert PrecropRule.from_augment(AugmentSpec(ext_min=1.0)) == PrecropRule()
    params = prepare_command.make_context("prepare", ["mpii", "--ext-max", "2.5", "--max-shift", "0.2",
                                                      "--max-rotation", "30", "--max-scale-jitter", "0.1",
                                                      "--min-extension", "1.2", "--resolution", "300",
                                                      "--resolution-margin", "0.5"]).params
    assert (params["ext_max"], params["max_shift"], params["max_rotation"], params["max_scale_jitter"],
            params["min_extension"], params["resolution"], params["resolution_margin"]) \
        == (2.5, 0.2, 30.0, 0.1, 1.2, 300, 0.5)


def _prepared(folder, rule=None, precrop=None):
    """A manifest-only data set folder (no shards) recording ``rule`` (or the raw ``precrop`` entry)."""
    shards.Manifest(name="mpii", splits={}, source_root="/data/mpii",
                    precrop=rule.to_dict() if rule is not None else precrop).write(folder)
    return folder


@pytest.mark.parametrize("augment", [AugmentSpec(), AugmentSpec(ext_min=1.0, ext_max=2.0, shift=0.0, flip=False),
                                     AugmentSpec(rotation=30.0, scale_jitter=0.2, shift=0.1)])
def test_a_recipe_inside_the_stored_region_passes(tmp_path, augment):
    folder = _prepared(tmp_path, PrecropRule(rotation=30.0, scale_jitter=0.2))
    require_covers(folder, augment)
    require_covers(folder, augment, manifest=shards.Manifest.read(folder))  # read once by the caller


@pytest.mark.parametrize("changes, setting, option", [
    ({"ext_max": 2.5}, "extension 2.5", "--ext-max 2.5"),
    ({"shift": 0.2}, "shift 0.2", "--max-shift 0.2"),
    ({"rotation": 30.0}, "rotation 30", "--max-rotation 30"),
    ({"scale_jitter": 0.2}, "scale jitter 0.2", "--max-scale-jitter 0.2"),
    ({"ext_min": 0.8}, "smallest extension 0.8", "--min-extension 0.8"),
    ({"resolution": 300}, "input size 300", "--resolution 300"),
])
def test_each_setting_beyond_the_stored_region_is_refused(tmp_path, changes, setting, option):
    """The message names the manifest, the setting and the prepare option; its command rebuilds the data
    set with a rule that then covers the recipe (the other settings kept)."""
    folder = _prepared(tmp_path, PrecropRule(jpeg_quality=90))
    input_size = changes.pop("resolution", 227)
    augment = AugmentSpec(ext_min=1.0).replace(**changes)
    if input_size != 227:
        changes["resolution"] = input_size
    with pytest.raises(DatasetError) as e:
        require_covers(folder, augment, input_size)
    message = str(e.value)
    assert message.startswith(f"{folder / shards.MANIFEST}: ")
    assert setting in message and option in message
    command = message[message.index("`") + 1:message.rindex("`")]
    words = shlex.split(command)
    assert words[:3] == ["deeppose-fast", "prepare", "mpii"] and words[-1] == "--replace"
    params = prepare_command.make_context("prepare", words[2:]).params
    rebuilt = PrecropRule.from_augment(
        AugmentSpec(ext_min=params["min_extension"], ext_max=params["ext_max"], shift=params["max_shift"],
                    rotation=params["max_rotation"], scale_jitter=params["max_scale_jitter"]),
        params["resolution"], jpeg_quality=params["jpeg_quality"], resolution_margin=params["resolution_margin"])
    assert rebuilt == dataclasses.replace(PrecropRule(jpeg_quality=90), **changes)
    _prepared(tmp_path, rebuilt)
    require_covers(folder, augment, input_size)


def test_several_settings_outside_are_all_named(tmp_path):
    folder = _prepared(tmp_path, PrecropRule())
    with pytest.raises(DatasetError, match=r"rotation 30, scale jitter 0.1.*--max-rotation 30 --max-scale-jitter 0.1"):
        require_covers(folder, AugmentSpec(rotation=30.0, scale_jitter=0.1))


@pytest.mark.parametrize("precrop", [PrecropRule(enabled=False).to_dict(), {}])
def test_whole_images_cover_every_recipe(tmp_path, precrop):
    """--no-precrop stores the original images (and a data set recording no rule holds whole images)."""
    folder = _prepared(tmp_path, precrop=precrop)
    require_covers(folder, AugmentSpec(ext_min=3.0, ext_max=5.0, shift=1.0, rotation=180.0, scale_jitter=0.9))


def test_a_refused_rotation_really_reaches_outside():
    """The contract is not stricter than the geometry: with rotation 30 on a region stored for rotation
    0, some crop's decoded region leaves the stored region (far from the image border)."""
    rng = np.random.default_rng(0)
    rule = PrecropRule()
    joints = np.array([[900, 800], [1000, 1100], [950, 950]], np.float32)
    x0, y0, x1, y1 = rule.region(joints, 4000, 4000)
    pose = np.zeros((3, 4), np.float32)
    pose[:, :2], pose[:, 2] = joints, 1
    reach = 0.0
    for draws in codec.sample_draws(rng, 200, AugmentSpec(flip=False, rotation=30.0)):
        g = codec.crop_geometry(pose, (4000, 4000), draws, size=227)
        lo, hi = g.anchor, g.anchor + g.shape
        reach = max(reach, x0 - lo[0], y0 - lo[1], hi[0] - x1, hi[1] - y1)
    assert reach > 10  # px beyond the stored region


def test_a_prepared_folder_records_its_rule(tmp_path, synthetic_mpii_dir):
    out = tmp_path / "prepared"
    with pytest.warns(DatasetWarning):
        prepare("mpii", out, source=[synthetic_mpii_dir], workers=1, progress=False,
                rule=PrecropRule.from_augment(AugmentSpec(ext_min=1.0, rotation=10.0)))
    require_covers(out, AugmentSpec(rotation=10.0))
    with pytest.raises(DatasetError, match=rf"rotation 20.*prepare mpii --out {out} --source "
                                           rf"{synthetic_mpii_dir} --max-rotation 20 --replace"):
        require_covers(out, AugmentSpec(rotation=20.0))


def test_stored_size_hand_computed():
    """The smallest crop of a box 100 x 200 at extension 1.0 is the box itself (no room to shift), so a
    227 px input needs 227 / 100 px per source px in x (more than the source: kept) and 227 / 200 in y
    (also kept); a person 4 times larger is stored at 227 * 1.25 / 400 in x and / 800 in y."""
    rule = PrecropRule()  # resolution 227, margin 0.25, ext_min 1.0, shift 0.1
    joints = np.array([[100, 100], [200, 300]], np.float32)
    region = rule.region(joints, 1000, 1000)
    assert rule.stored_size(joints, region, 1000, 1000) == (region[2] - region[0], region[3] - region[1])
    big = np.array([[1000, 1000], [1400, 1800]], np.float32)
    x0, y0, x1, y1 = rule.region(big, 4000, 4000)
    need = 227 * 1.25
    assert rule.stored_size(big, (x0, y0, x1, y1), 4000, 4000) == (
        math.ceil((x1 - x0) * need / 400), math.ceil((y1 - y0) * need / 800))
    # with extension 1.5 the crop is 600 x 1200 and may shift by 0.1 of it: the border at x = 1050 then
    # clips it to 1050 - (1200 - 0.5 * 600 - 60) = 210 px
    wider = PrecropRule(ext_min=1.5)
    x0, y0, x1, y1 = wider.region(big, 1050, 4000)
    assert wider.stored_size(big, (x0, y0, x1, y1), 1050, 4000) == (
        min(x1 - x0, math.ceil((x1 - x0) * need / 210)), math.ceil((y1 - y0) * need / 1200))
    assert PrecropRule(resolution=0).stored_size(big, (x0, y0, x1, y1), 1050, 4000) == (x1 - x0, y1 - y0)


@pytest.mark.parametrize("recipe", [AugmentSpec(ext_min=1.0, ext_max=2.0),
                                    AugmentSpec(ext_min=1.2, ext_max=1.6, rotation=40.0, scale_jitter=0.2)])
def test_no_crop_of_the_recipe_is_upsampled_from_the_stored_region(recipe):
    """Scale each region as prepare does, draw the recipe's crops from the scaled region: along each axis
    stored smaller than the source, every output pixel spans at least 1 + margin stored pixels, also for
    people the image border cuts (an axis the rule keeps at full resolution is the source's own
    resolution); and the regions of large people are really stored smaller."""
    rng = np.random.default_rng(3)
    rule = PrecropRule.from_augment(recipe, 227)
    stretch, reduced = 0.0, 0
    for _ in range(300):
        W, H = 1280, 720
        k = 16
        height = rng.uniform(150, 700)
        joints = np.stack([rng.uniform(0, 0.4, k) * height, rng.uniform(0, 1, k) * height], 1)
        joints += [rng.uniform(-0.2 * W, W), rng.uniform(-0.2 * H, H - 0.5 * height)]
        inside = (joints[:, 0] >= 0) & (joints[:, 0] <= W) & (joints[:, 1] >= 0) & (joints[:, 1] <= H)
        joints[~inside] = np.nan
        if inside.sum() < 2:
            continue
        region = rule.region(joints, W, H)
        x0, y0, x1, y1 = region
        w2, h2 = rule.stored_size(joints, region, W, H)
        reduced += (w2, h2) != (x1 - x0, y1 - y0)
        scale = np.float32([w2 / (x1 - x0), h2 / (y1 - y0)])
        pose = np.zeros((k, 4), np.float32)
        pose[inside, :2] = (joints[inside] - [x0, y0]) * scale
        pose[inside, 2] = 1
        for d in codec.sample_draws(rng, 5, recipe):
            g = codec.crop_geometry(pose, (h2, w2), d, size=227, shift=recipe.shift, scale=scale,
                                    flip_perm=np.arange(k))
            # the matrix is (zoom x rotation) @ diag(a, b): column j's norm is the output pixels per
            # stored pixel along source axis j; the bound holds on each axis that was scaled down
            per_axis = np.linalg.norm(g.matrix[:, :2].astype(np.float64), axis=0)
            for axis, scaled in enumerate(((w2 < x1 - x0), (h2 < y1 - y0))):
                if scaled:
                    stretch = max(stretch, per_axis[axis])
    assert reduced > 100
    assert stretch <= 1 / (1 + rule.resolution_margin) + 1e-6
