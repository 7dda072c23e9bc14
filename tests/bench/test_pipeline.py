"""bench.pipeline: the RAM-cache loader crops exactly as the reference loader does (same geometry, warp
and normalisation, from images decoded once), and a loader worker reports sane numbers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from deeppose_fast import codec
from deeppose_fast.bench import pipeline
from deeppose_fast.datasets import DatasetWarning, shards
from deeppose_fast.datasets.prepare import prepare
from deeppose_fast.pipeline import reference
from deeppose_fast.specs import AugmentSpec


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-synthetic")
    with warnings.catch_warnings():  # the generator's people without joints are skipped, with a warning
        warnings.simplefilter("ignore", DatasetWarning)
        prepare("synthetic", out, num_images=12, workers=1, progress=False)
    return out


def test_ram_cache_crops_equal_the_reference_loader(data):
    loader = pipeline.RamCacheLoader(data, batch_size=4, input_size=64, seed=3, num_threads=1)
    records = [r for tar in loader.info.tars for r in shards.iter_shard(tar)]
    assert len(loader.images) == len(records) == loader.info.count
    assert loader.cached_bytes == sum(im.nbytes for im in loader.images)
    draws = codec.sample_draws(np.random.default_rng(0), len(records), AugmentSpec())
    for i in (0, len(records) - 1):
        mine, g = loader._crop(i, draws[i])
        ref, h = reference.crop_sample(records[i].jpeg, records[i].pose, draws[i], size=64,
                                       flip_perm=loader.info.flip_perm)
        np.testing.assert_array_equal(mine, ref)
        np.testing.assert_array_equal(g.targets, h.targets)


def test_ram_cache_batches_cover_an_epoch_once(data):
    loader = pipeline.RamCacheLoader(data, batch_size=5, input_size=48, seed=0, num_threads=2)
    n = len(loader.images)
    # the train people, read from the shards apart from the loader (person_index is meta[6])
    people = sorted(int(r.meta[6]) for tar in loader.info.tars for r in shards.iter_shard(tar))
    assert len(people) == n == loader.info.count and len(set(people)) == n and n % 5 != 0
    batch = next(loader)
    assert batch["images"].shape == (5, 48, 48, 3) and batch["images"].dtype == np.float32
    assert batch["targets"].shape == (5, loader.info.num_joints, 2)
    assert np.all(np.abs(batch["targets"]) <= 0.5) and set(np.unique(batch["weights"])) <= {0.0, 1.0}
    # per-image normalisation: mean 0, unit variance per channel
    np.testing.assert_allclose(batch["images"][0].mean(axis=(0, 1)), 0, atol=1e-3)
    seen = list(batch["person_index"])
    while len(seen) < 2 * n:  # two epochs; the first batch of the second tops up the last of the first
        seen += list(next(loader)["person_index"])
    assert sorted(seen[:n]) == people  # each train person exactly once in the first epoch
    assert sorted(seen[n:2 * n]) == people and seen[n:2 * n] != seen[:n]  # and again, reshuffled


@pytest.mark.parametrize("loader", ["reference", "ram-cache"])
def test_worker_reports_rate_cpu_and_peak_rss(data, loader):
    p = {"name": loader, "data": str(data), "batch_size": 4, "input_size": 48, "batches": 2, "repeats": 2,
         "warmup": 1, "threads": 1, "augment": {"ext_min": 1.5, "ext_max": 2.0}}
    r = pipeline.worker(p)
    assert len(r["values"]) == 2 and r["median"] > 0 and r["unit"] == "crops/s"
    assert r["cpu_s_per_1000"] > 0 and r["peak_rss_mib"] > 10 and r["setup_s"] >= 0


def test_unknown_loader_is_a_clear_error(data):
    with pytest.raises(ValueError, match="unknown loaders.*opencv"):
        pipeline.run(data, loaders=["opencv"])
