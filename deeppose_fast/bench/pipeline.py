"""Stage 1, the input pipeline: training crops per second and peak RSS of each loader, side by side.

Loaders (each measured in its own process, so its peak RSS is its own):
- ``dali-cpu`` / ``dali-gpu``: ``pipeline.dali.build_train_pipeline`` on CPU operators (each loader's
  default decode: ``dali.CPU_DECODE``) or on the GPU (each stored region decoded whole by the mixed
  decoder, GPU warp); batches are handed out as NumPy arrays (GPU images copied to the host) like the
  other loaders; ``dali-cpu-region`` / ``dali-cpu-whole``: the CPU pipeline decoding only the crop's
  region (``decoders.image_slice``) or the stored region whole (``decoders.image``), the measurement
  that chose ``dali.CPU_DECODE``;
- ``reference``: ``pipeline.reference.train_batches``, the OpenCV + NumPy loader (whole-JPEG decode);
- ``dali-cpu-joints`` / ``dali-gpu-joints``: a cascade stage's training crops
  (``pipeline.joint_crops.stage_train_batches``: one joint each, about a simulated estimate drawn from a
  normal law of ``JOINT_LAW_STD`` torso diameters, side ``JOINT_SIGMA`` diameters), the same decode, warp
  and normalisation, fed from NumPy;
- ``ram-cache``: the reference implementation's strategy: decode every JPEG of the split once into RAM,
  then per batch crop, warp and normalise with ``codec`` and the reference loader's functions. Its set-up
  (decoding the split) is reported apart, and its peak RSS grows with the data set.

Same work per crop for all: the crop recipe of the measured preset (an ``AugmentSpec``: random extension,
shift, flip with label swap, rotation, zoom), bilinear warp to S x S, per-image per-channel
normalisation, NHWC float32 batches with targets and weights, on ``threads`` worker threads. Loaders alternate over ``rounds`` rounds (A B A B ...); in each process
``warmup`` batches are discarded, then ``repeats`` timed runs of ``batches`` batches (or ``seconds``).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from deeppose_fast import codec, config
from deeppose_fast.bench import core
from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import reference
from deeppose_fast.pipeline.contract import PipelineError, gpu_available, split_info
from deeppose_fast.specs import AugmentSpec

LOADERS = ("dali-cpu", "dali-gpu", "dali-cpu-region", "dali-cpu-whole", "reference", "ram-cache",
           "dali-cpu-joints", "dali-gpu-joints")
# The joint loaders' displacement law (torso diameters): about stage 1's errors on the synthetic set
# (README, "Cascade"); the crops' cost does not depend on it beyond the region sizes.
JOINT_LAW_STD = 0.2
JOINT_SIGMA = 1.0


def default_loaders() -> list[str]:
    """dali-cpu, reference and ram-cache, plus dali-gpu where DALI sees a GPU."""
    return ["dali-cpu"] + (["dali-gpu"] if gpu_available() else []) + ["reference", "ram-cache"]


class RamCacheLoader:
    """Training batches from a split whose JPEGs were all decoded into RAM up front (as the reference
    implementation did: about 10 GB for MPII), reshuffled every epoch. Yields the same dicts as
    ``reference.train_batches`` (``images``, ``targets``, ``weights``, ``crop_box``) plus ``person_index``
    (B,), each person's row in ``datasets.read()``'s arrays (from the record's meta)."""

    def __init__(self, shard_dir, *, batch_size: int, input_size: int = 227, augment: AugmentSpec = AugmentSpec(),
                 seed: int = 0, num_threads: int = 2, split: str = "train"):
        self.info = split_info(shard_dir, split)
        self.batch_size, self.size, self.augment = batch_size, input_size, augment
        self.rng = np.random.default_rng(seed)
        self.pool = ThreadPoolExecutor(max(1, num_threads))
        records = [rec for tar in self.info.tars for rec in shards.iter_shard(tar)]
        self.poses = [rec.pose for rec in records]
        self.scales = [rec.meta[shards.META_SCALE] for rec in records]
        self.person_index = np.array([int(rec.meta[6]) for rec in records], np.int64)
        # BGR uint8, as cv2.imdecode returns them (and as the reference implementation kept them)
        self.images = list(self.pool.map(
            lambda rec: cv2.imdecode(np.frombuffer(rec.jpeg, np.uint8), cv2.IMREAD_COLOR), records))
        del records
        bad = next((i for i, im in enumerate(self.images) if im is None), None)
        if bad is not None:
            raise PipelineError(f"{self.info.shard_dir}: a JPEG of split {split!r} does not decode "
                                f"(record {bad} in shard order)")
        self.cached_bytes = sum(im.nbytes for im in self.images)
        self._order = np.empty(0, np.int64)

    def _crop(self, index: int, draws: np.ndarray):
        return reference.crop_decoded(self.images[index], self.poses[index], draws, size=self.size,
                                      shift=self.augment.shift, flip_perm=self.info.flip_perm,
                                      scale=self.scales[index])

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if len(self._order) < self.batch_size:  # a new epoch, reshuffled
            self._order = np.concatenate([self._order, self.rng.permutation(len(self.images))])
        idx, self._order = self._order[:self.batch_size], self._order[self.batch_size:]
        draws = codec.sample_draws(self.rng, self.batch_size, self.augment)
        results = list(self.pool.map(self._crop, idx, draws))
        return {"images": np.stack([im for im, _ in results]),
                "targets": np.stack([g.targets for _, g in results]),
                "weights": np.stack([g.weights for _, g in results]),
                "crop_box": np.stack([g.crop_box for _, g in results]),
                "person_index": self.person_index[idx]}


def _make_step(loader: str, p: dict):
    """A function producing one batch of ``loader`` and returning its size, plus extra facts."""
    common = dict(batch_size=p["batch_size"], input_size=p["input_size"],
                  augment=AugmentSpec.from_dict(p.get("augment", {})), seed=p.get("seed", 0),
                  num_threads=p["threads"])
    if loader in ("reference", "ram-cache"):
        cv2.setNumThreads(1)  # parallelism comes from the loader's thread pool, as in DALI
        if loader == "ram-cache":
            it = RamCacheLoader(p["data"], **common)
            extra = {"cached_images": len(it.images), "cached_mib": it.cached_bytes / 2**20}
        else:
            it, extra = reference.train_batches(p["data"], **common), {}
        return (lambda: next(it)["images"].shape[0]), extra
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; expected one of {LOADERS}")
    from deeppose_fast.pipeline import dali  # late: loads DALI, which the other loaders' processes must not

    if loader.endswith("-joints"):
        return _joint_step(loader, p, common), {}

    decode = loader.rsplit("-", 1)[1] if loader.startswith("dali-cpu-") else "auto"
    pipe = dali.build_train_pipeline(p["data"], device="gpu" if loader == "dali-gpu" else "cpu", decode=decode,
                                     **common)
    pipe.build()

    def step():
        # NumPy arrays out, as the other loaders (GPU images: including the copy to the host)
        return dali.to_numpy(pipe.run()[0]).shape[0]

    return step, {}


def _joint_step(loader: str, p: dict, common: dict):
    """One batch of a cascade stage's joint crops (``dali-*-joints``)."""
    from deeppose_fast.cascade import statistics
    from deeppose_fast.pipeline import joint_crops

    table = joint_crops.RecordTable(split_info(p["data"], "train"))
    law = statistics.DisplacementStats.isotropic(table.info.skeleton, JOINT_LAW_STD ** 2)
    it = joint_crops.stage_train_batches(None, law, sigma=JOINT_SIGMA, batch_size=common["batch_size"],
                                         input_size=common["input_size"], flip=common["augment"].flip,
                                         seed=common["seed"], table=table, num_threads=common["num_threads"],
                                         device="gpu" if loader.startswith("dali-gpu") else "cpu")
    return lambda: next(it)[0].shape[0]


def worker(p: dict) -> dict:
    """Measure the loader ``p["name"]`` in this process: crops/s per repeat, CPU s per 1000 crops, set-up
    time (building, or decoding the split into RAM, plus warm-up) and peak RSS (MiB)."""
    t0 = time.perf_counter()
    step, extra = _make_step(p["name"], p)
    setup_s = time.perf_counter() - t0
    timing = core.measure_rate(step, warmup=p["warmup"], repeats=p["repeats"], min_calls=p["batches"],
                               min_seconds=p.get("seconds", 0.0), unit="crops/s")
    return {**timing.to_dict(), "setup_s": setup_s, "peak_rss_mib": core.peak_rss_mb(), **extra}


def run(data, *, loaders=None, batch_size: int = 32, input_size: int = 227, batches: int = 20,
        seconds: float = 0.0, repeats: int = 2, rounds: int = 3, warmup: int = 3, threads: int = 2,
        augment: AugmentSpec = AugmentSpec(), seed: int = 0, timeout: float | None = None) -> dict:
    """Measure the loaders (default: ``default_loaders()``) in interleaved rounds, each cropping by
    ``augment``. Returns ``{"params", "rows": [{"name", "median", "spread", "values", "cpu_s_per_1000",
    "setup_s", "peak_rss_mib", ...}]}`` (rates in crops/s)."""
    params = {"data": str(data), "batch_size": batch_size, "input_size": input_size, "batches": batches,
              "seconds": seconds, "repeats": repeats, "warmup": warmup, "threads": threads,
              "augment": augment.to_dict(), "seed": seed}
    return core.compare("pipeline", "loaders", list(loaders or default_loaders()), LOADERS, params, rounds,
                        timeout=timeout)


def measure(s, data, num_joints: int) -> dict:
    """The stage for the runner's resolved ``Settings`` ``s``: the preset's crop recipe."""
    return run(data, loaders=s.loaders, batch_size=s.batch_size, input_size=s.input_size, batches=s.batches,
               rounds=s.rounds, threads=s.threads, augment=config.preset(s.preset).augment, warmup=s.warmup,
               repeats=s.repeats, seconds=s.seconds, timeout=s.timeout)


def markdown(stage: dict) -> str:
    """The stage's table."""
    p = stage["params"]
    lines = [f"Training crops {p['input_size']} px, batch {p['batch_size']}, {p['threads']} threads; "
             f"{core.repeats_note(p, 'batches')}.", ""]
    lines += core.table(["loader", "crops/s (median)", "spread", "CPU s / 1000 crops", "set-up s", "peak RSS MiB"],
                        [[r["name"], *core.rate_cells(r), f"{r['cpu_s_per_1000']:.2f}", f"{r['setup_s']:.1f}",
                          f"{r['peak_rss_mib']:.0f}"] for r in stage["rows"]])
    cache = next((r for r in stage["rows"] if "cached_mib" in r), None)
    if cache:
        lines += ["", f"ram-cache holds {cache['cached_images']:.0f} decoded images "
                      f"({cache['cached_mib']:.0f} MiB); its set-up time is the decode of the whole split."]
    return "\n".join(lines) + "\n"
