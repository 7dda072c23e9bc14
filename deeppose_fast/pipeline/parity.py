"""Backend parity: what the DALI GPU path computes differently from the CPU path, each measured against a
tolerance derived from what the two backends are documented to do (or, where nothing is documented,
from a stated assumption).

One owner of these comparisons: the tests marked ``gpu`` (tests/pipeline/test_gpu_parity.py) and
``deeppose-fast doctor`` both run ``CHECKS`` on the dot data set of ``make_dot_data``; each check returns a
``ParityResult`` (the measured figures, each with its bound). With ``other="cpu"`` every check compares
the CPU with itself: that runs the comparison code on any host (the tests do), it proves nothing about a
GPU.

Legend: B batch, S crop side, n = S^2 pixels per image and channel, u = 2^-24 (float32 unit roundoff),
grey = one level of 0-255, z = a normalised value (``contract.standardize``), s = the image's
``sqrt(var + NORM_EPSILON)`` per channel, M = the image's largest |pixel| per channel.

What differs between the backends, and the check that compares it:

1. ``decode_parity``: the JPEG decoder, nvJPEG (``device="mixed"``) against libjpeg-turbo (``"cpu"``)
   (DALI's ``fn.decoders.image`` docs). Both with ``jpeg_fancy_upsampling=True``, which DALI documents as
   "make the mixed backend use the same chroma upsampling approach as the cpu one" (libjpeg-turbo's
   "fancy" triangle filter); without it nvJPEG replicates chroma samples and saturated edges differ by
   tens of grey levels. Every stored JPEG of the dot set, decoded whole by both.
   - mean |diff| per image <= ``JPEG_MEAN_GREY`` = 1: DALI's own test of this setting
     (dali/test/python decoder tests, ``test_fancy_upsampling``: mixed with fancy upsampling against cpu,
     ``compare_pipelines(..., eps=1)``, whose ``check_batch`` fails a sample whose mean |diff| > eps;
     NVIDIA/DALI#4662).
   - max |diff| <= ``JPEG_MAX_GREY`` = 8 (``jpeg_max_grey``): Huffman decoding and dequantisation are
     exact integer work, so the decoders differ only in (a) the inverse DCT: each within 1 of the exact
     transform per Y, Cb, Cr sample, the IEEE 1180-1990 peak-error bound (assumed for both: libjpeg-turbo's
     default IDCT, used since ``use_fast_idct=False``, is the IJG's "slow-but-accurate" jidctint.c, whose
     predecessor jrevdct.c passed the IEEE 1180 test; nvJPEG documents no accuracy), so they differ by
     <= 2; (b) fancy upsampling, a convex combination (weights 3/4, 1/4 per axis) that
     keeps that bound, plus 1 where the two round it differently; (c) YCbCr -> RGB (JFIF: R = Y + 1.402 Cr,
     G = Y - 0.344 Cb - 0.714 Cr, B = Y + 1.772 Cb), each rounding to an integer (<= 1 between them).
     Worst channel, B: 2 + 1.772 * 3 + 1 = 8.3, and differences of integers are integers: 8. Clamping to
     0-255 is 1-Lipschitz and adds nothing.
2. ``warp_parity``: ``fn.warp_affine`` (bilinear, float output, border clamped) on the GPU against the
   CPU, on the same decoded pixels and matrices. Both backends run DALI's one sampler source
   (``dali/kernels/imgproc/sampler.h``, host and device), so they differ only in float32 rounding (fused
   multiply-adds on the GPU): the source coordinate ``a x + b y + c`` by <= 4 ulps per axis, 2^-10 px for
   coordinates below 2048 px (``WARP_COORD_PX``; the dot images are < 400 px), and bilinear interpolation
   is Lipschitz with constant <= 255 grey/px per axis, plus a few ulps of 255 for the arithmetic:
   ``WARP_MAX_GREY`` = 2 * 255 * 2^-10 + 8 * 255 * u = 0.498 grey.
3. ``eval_crop_parity`` / ``train_crop_parity``: the pipelines' raw crops (``normalize=False``): decode +
   warp as ``pipeline/dali.py`` wires them on each backend. A bilinear sample is a convex combination of
   decoded pixels, so the decoder's max bound carries over: max |diff| <= ``CROP_MAX_GREY`` =
   ``JPEG_MAX_GREY + WARP_MAX_GREY`` = 8.5 (the warp term also covers the GPU warping the whole decoded
   region with a shifted translation where the CPU warps a decoded slice). No mean bound here: DALI's is
   per whole image, and a crop may sample its worst part. The dot test (each target on its own joint's
   dot, as tests/pipeline/test_dali.py states it) runs on the other backend's crops.
   ``joint_crop_parity``: the same for a cascade stage's joint crops (``pipeline/joint_crops.py``: the
   same decode and warp, the ``JointCrop`` geometry), with the crop bound.
4. ``normalised_parity``: ``fn.normalize`` per image and channel (``contract.standardize``).
   - Each backend against float64 ``contract.standardize`` of its own raw crops (same seed, same samples):
     within ``norm_float32_bound``. Both backends take the mean first, then sum (x - mean)^2 with that
     mean (two passes: ``dali/operators/math/normalize``, ``VarianceCPU`` and ``InvStdDevGPU`` get the
     computed mean). A float32 sum of n values errs by <= g times the sum of their magnitudes with
     g = 6 sqrt(n) u (probabilistic rounding-error bound, Higham & Mary 2019, Thm 2.8, lambda = 6; it holds
     whatever the summation order, where the worst case n u would be 0.3 % at S = 227). So the mean is off
     by dm <= (g + u) M, s relatively by <= (g + 4 u) / 2 + dm^2 / s^2 (the variance of x - computed mean
     is the variance plus dm^2), and z by <= dm / s + |z| (that) + 4 u |z| + 2 u M / s (subtraction,
     reciprocal square root within 2 ulps, product).
   - GPU against CPU, per pixel, from the raw bound b = ``CROP_MAX_GREY``: with d = GPU raw - CPU raw,
     z_gpu - z_cpu = (d - mean d) / s_gpu + z_cpu (s_cpu - s_gpu) / s_gpu exactly, |d - mean d| <= 2 b,
     |s_cpu - s_gpu| <= std(d) <= b (a standard deviation is a seminorm; adding the epsilon under the
     root is 1-Lipschitz) and s_gpu >= max(1, s_cpu - b) (epsilon = 1): |z_gpu - z_cpu| <=
     b (2 + |z_cpu|) / max(1, s_cpu - b), plus each side's float32 bound (``normalised_bound``). A grey
     level is worth 1/s in normalised units: the bound is per image and channel, from its s.
5. ``float16_parity``: the float16 output (``dtype="float16"``) against the float32 output of the same
   backend and seed, kept as float16 (not cast away first): IEEE binary16 rounds to nearest, relative
   error <= 2^-11 for normal numbers and absolute <= 2^-25 below 2^-14 (subnormal spacing 2^-24), so
   |f16 - f32| <= 2^-11 |f32| + 2^-25, plus the measured difference between two float32 runs of the same
   samples (0 where the backend's reductions are deterministic) (``half_bound``).
6. ``dataset_parity``: what training reads, ``train_dataset(device="gpu")`` (``tf.data``, DALI's TF
   plugin) against ``train_dataset(device="cpu")`` with the same seed: the images are on the GPU
   (device ``GPU:0``), shapes and dtypes as promised (float32, and float16 with ``dtype="float16"``), pixels
   within the per-pixel normalised bound of item 4 (statistics from the same samples' raw CPU crops), the
   float16 dataset within ``half_bound`` of the float32 one (two float32 runs).

Sanity checks (not parity: both pipelines compute these on the CPU with the same operators, so they must
be identical, bit for bit): targets, weights, crop boxes, people, records' meta and the random draws.
They make sure that the two sides compared the same samples.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeppose_fast.datasets import shards
from deeppose_fast.pipeline import contract, dali
from deeppose_fast.skeleton import LSP
from deeppose_fast.specs import AugmentSpec
from deeppose_fast.testing import dots

# the small dot data set every check reads: 3 train shards + 2 test shards, some joints unannotated
DOT_DATA = dict(num_train=32, num_test=13, records_per_shard=10, unannotated=0.1, seed=5)
EVAL_BATCH = 4
EVAL_BATCH_SIZES = [4, 4, 4, 1]  # 13 test people in batches of 4: the last batch is smaller
GPU_ID = 0  # the device the GPU side runs on

U32 = 2.0 ** -24  # float32 unit roundoff
U16 = 2.0 ** -11  # float16 (binary16) unit roundoff
F16_SUBNORMAL_HALF_SPACING = 2.0 ** -25  # absolute rounding error below float16's smallest normal 2^-14
GREY_MAX = 255.0
LAMBDA = 6.0  # probabilistic rounding-error bound: lambda sqrt(n) u (Higham & Mary 2019)

# 1. JPEG decode (see the module docstring)
JPEG_MEAN_GREY = 1.0  # DALI's test_fancy_upsampling: mean |diff| per image <= 1
IDCT_ERROR = 1  # per decoder, per Y/Cb/Cr sample, against the exact inverse DCT (IEEE 1180)
UPSAMPLE_ROUNDING = 1  # fancy upsampling rounded differently
RGB_ROUNDING = 1  # R, G, B each rounded to an integer by both
# JFIF YCbCr -> RGB: the gains of |dY|, |dCb|, |dCr| in each of R, G, B
YCC_TO_RGB = {"R": (1.0, 0.0, 1.402), "G": (1.0, 0.344136, 0.714136), "B": (1.0, 1.772, 0.0)}


def jpeg_max_grey(idct: float = IDCT_ERROR, upsample: float = UPSAMPLE_ROUNDING, rounding: float = RGB_ROUNDING
                  ) -> int:
    """Largest |difference| of one R, G or B value between two JPEG decoders whose inverse DCTs are each
    within ``idct`` of the exact one, whose chroma upsampling (convex) rounds within ``upsample`` of each
    other and which each round R, G, B to integers (``rounding`` between them): integer grey levels."""
    dy, dc = 2 * idct, 2 * idct + upsample
    return max(math.floor(gy * dy + (gcb + gcr) * dc + rounding + 1e-9) for gy, gcb, gcr in YCC_TO_RGB.values())


JPEG_MAX_GREY = jpeg_max_grey()
# 2. warp
WARP_COORD_PX = 4 * 2.0 ** -12  # 4 ulps of a float32 coordinate below 2048 px (ulp(2048) = 2^-12)
WARP_MAX_GREY = 2 * GREY_MAX * WARP_COORD_PX + 8 * GREY_MAX * U32
# 3. crops
CROP_MAX_GREY = JPEG_MAX_GREY + WARP_MAX_GREY
DOT_LABEL_ACCURACY = 1.0  # every weighted target on its own joint's dot (tests/pipeline/test_dali.py)
DOT_MEAN_ERROR_PX = 0.5

_OPS = {"<": operator.lt, "<=": operator.le, "==": operator.eq, ">=": operator.ge}


@dataclass(frozen=True)
class Figure:
    """One measured figure and the bound it must keep: ``value OP limit``."""

    name: str
    value: float | list | str
    op: str
    limit: float | list | str

    @property
    def passed(self) -> bool:
        """Whether ``value OP limit`` holds."""
        return bool(_OPS[self.op](self.value, self.limit))

    def __str__(self) -> str:
        def fmt(v):
            return f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"{self.name} = {fmt(self.value)} (needs {self.op} {fmt(self.limit)})"


@dataclass
class ParityResult:
    """The figures of one parity check; ``passed`` when every figure keeps its bound. ``info``: measured
    facts that have no bound (timings), reported beside the figures."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def add(self, name: str, value, op: str, limit) -> None:
        """Record a measured figure (NumPy scalars become Python floats, so the result is JSON-ready)."""
        if isinstance(value, (np.generic, np.ndarray)):
            value = value.tolist()
        self.figures.append(Figure(name, value, op, limit))

    def same(self, name: str, a, b) -> None:
        """A sanity figure: ``a`` and ``b`` (computed by the same CPU operators on both sides) are
        identical, bit for bit."""
        self.add(f"{name} max |diff| (same CPU operators)", _max_abs(a, b), "==", 0.0)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.figures)

    @property
    def failures(self) -> list[Figure]:
        return [f for f in self.figures if not f.passed]

    def summary(self) -> str:
        """One line: the figures out of bounds, or all figures when none is."""
        return "; ".join(map(str, self.failures or self.figures))

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed,
                "figures": [{"name": f.name, "value": f.value, "op": f.op, "limit": f.limit, "passed": f.passed}
                            for f in self.figures], "info": dict(self.info)}


# tolerance arithmetic (pure NumPy: unit-tested on any host) ----------------------------------------
def _max_abs(a, b) -> float:
    """Largest absolute difference of two arrays of one shape (inf when the shapes differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def max_ratio(a, b, bound) -> float:
    """max |a - b| / bound, elementwise (``bound`` broadcasts): <= 1 when every element keeps its bound;
    inf when the shapes differ or a difference is not finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not a.size:
        return 0.0
    diff, bound = np.abs(a - b), np.broadcast_to(np.asarray(bound, np.float64), a.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)  # 0 / 0: equal values keep even a zero bound
    return float(np.where(np.isnan(ratio), np.inf, ratio).max())


def rounding_gamma(n: int, lam: float = LAMBDA) -> float:
    """Relative error bound of a float32 sum of ``n`` terms (relative to the sum of their magnitudes):
    ``lam sqrt(n) u``, the probabilistic bound of Higham & Mary (2019), whatever the summation order."""
    return lam * math.sqrt(n) * U32


def image_stats(raw) -> dict:
    """Float64 statistics of raw crops (B, H, W, C) per image and channel: ``z`` (``contract.standardize``,
    the exact normalised crops), ``s`` = sqrt(var + NORM_EPSILON), ``M`` = max |x|, each (B, 1, 1, C)
    but ``z``, and ``n`` = H W."""
    x = np.asarray(raw, np.float64)
    mean, var = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    return {"z": contract.standardize(x, mean, var), "s": np.sqrt(var + contract.NORM_EPSILON),
            "M": np.abs(x).max(axis=(1, 2), keepdims=True), "n": x.shape[1] * x.shape[2]}


def norm_float32_bound(z, s, M, n: int):
    """How far float32 ``fn.normalize`` (two passes) of n values may land from the exact normalised value
    ``z``, for an image channel of scale ``s`` and largest |pixel| ``M`` (all broadcast): see the module
    docstring."""
    g = rounding_gamma(n)
    z = np.abs(np.asarray(z, np.float64))
    dm = (g + U32) * M
    ds = (g + 4 * U32) / 2 + dm * dm / (s * s)
    return dm / s + z * ds + 4 * U32 * z + 2 * U32 * M / s


def normalised_bound(z_cpu, s_cpu, M_cpu, n: int, grey: float = CROP_MAX_GREY):
    """Per pixel: how far a normalised pixel of the other backend may be from the CPU's (exact ``z_cpu``,
    scale ``s_cpu`` and max ``M_cpu`` of the CPU's raw crop, all broadcast) when their raw crops differ by
    at most ``grey`` everywhere: ``grey (2 + |z|) / max(1, s - grey)`` plus both sides' float32 bounds."""
    z = np.abs(np.asarray(z_cpu, np.float64))
    s_low = np.maximum(1.0, s_cpu - grey)
    return (grey * (2 + z) / s_low + norm_float32_bound(z, s_cpu, M_cpu, n)
            + norm_float32_bound(z + grey * (2 + z) / s_low, s_low, M_cpu + grey, n))


def half_bound(x32, spread=0.0):
    """Per element: how far the float16 rounding of the float32 value ``x32`` may be (round to nearest:
    2^-11 relative, 2^-25 absolute below the normal range), plus ``spread``, the measured difference of
    two float32 runs of the same samples."""
    x = np.abs(np.asarray(x32, np.float64))
    return U16 * x + F16_SUBNORMAL_HALF_SPACING + np.abs(np.asarray(spread, np.float64))


# comparisons shared by the checks --------------------------------------------------------------------
def pixel_figures(r: ParityResult, what: str, cpu, other, max_grey: float = CROP_MAX_GREY) -> None:
    """Raw pixels (grey levels) of the two backends: same shape, max |diff| within ``max_grey``."""
    r.add(f"{what} shape", list(np.shape(other)), "==", list(np.shape(cpu)))
    r.add(f"{what} max |diff| grey", _max_abs(cpu, other), "<=", max_grey)


def normalised_figures(r: ParityResult, what: str, raw_cpu, z_cpu, z_other, grey: float = CROP_MAX_GREY) -> None:
    """Normalised crops (NHWC) of two backends against the per-pixel bound from the CPU's raw crops:
    the figure is max |diff| / bound (<= 1)."""
    st = image_stats(raw_cpu)
    bound = normalised_bound(st["z"], st["s"], st["M"], st["n"], grey)
    r.add(f"{what} max |diff| / per-pixel bound", max_ratio(z_cpu, z_other, bound), "<=", 1.0)


def reference_figures(r: ParityResult, what: str, raw, z) -> None:
    """A backend's normalised crops (NHWC) against float64 ``contract.standardize`` of its own raw crops,
    within ``norm_float32_bound``: the figure is max |diff| / bound (<= 1)."""
    st = image_stats(raw)
    bound = norm_float32_bound(st["z"], st["s"], st["M"], st["n"])
    r.add(f"{what} max |diff| / float32 bound", max_ratio(st["z"], z, bound), "<=", 1.0)


def half_figures(r: ParityResult, what: str, x16, x32, x32_again) -> None:
    """A float16 output against the float32 output of the same samples (``x32``, and ``x32_again`` from
    a second run, whose difference from the first widens the bound): kept float16, within
    ``half_bound``."""
    r.add(f"{what} dtype", str(np.asarray(x16).dtype), "==", "float16")
    spread = np.abs(np.asarray(x32, np.float64) - np.asarray(x32_again, np.float64))
    r.add(f"{what} max |f16 - f32| / float16 bound", max_ratio(x16, x32, half_bound(x32, spread)), "<=", 1.0)


# the checks -------------------------------------------------------------------------------------------
def make_dot_data(out_dir: str | Path) -> Path:
    """Write the dot data set the checks read (45 people, a few seconds) into ``out_dir``; returns it."""
    return dots.make_dot_dataset(out_dir, **DOT_DATA)


def _device_id(device: str) -> int | None:
    return GPU_ID if device == "gpu" else None


def _samples(tl) -> list[np.ndarray]:
    """A DALI TensorList (CPU or GPU, possibly ragged) as a list of NumPy arrays."""
    if hasattr(tl, "as_cpu"):
        tl = tl.as_cpu()
    return [np.array(tl.at(i)) for i in range(len(tl))]


def _jpegs(dot_dir) -> list[np.ndarray]:
    """Every stored JPEG of the dot data set (both splits), as uint8 arrays."""
    return [np.frombuffer(rec.jpeg, np.uint8) for split in ("train", "test")
            for rec in shards.iter_records(dot_dir, split)]


def _run_once(graph, batch_size: int, device: str, **kwargs) -> tuple:
    pipe = graph(batch_size=batch_size, num_threads=2, device_id=_device_id(device), seed=0,
                 prefetch_queue_depth=1, **kwargs)
    pipe.build()
    return pipe.run()


def _decode(jpegs: list[np.ndarray], device: str) -> list[np.ndarray]:
    """``jpegs`` decoded whole to RGB uint8 by DALI's decoder on ``device`` (``mixed`` for the GPU), with
    the chroma upsampling the pipelines ask for."""
    from nvidia.dali import fn, pipeline_def, types  # late: DALI's graph API, only where a check runs

    @pipeline_def
    def graph():
        data = fn.external_source(source=lambda: jpegs, batch=True)
        return fn.decoders.image(data, device="mixed" if device == "gpu" else "cpu", output_type=types.RGB,
                                 jpeg_fancy_upsampling=True)

    (images,) = _run_once(graph, len(jpegs), device)
    return _samples(images)


def crop_matrices(shapes, size: int, seed: int = 0) -> list[np.ndarray]:
    """One src->dst affine matrix (2, 3) float32 per image shape (H, W, C): a square of 0.5-1.2 times the
    longer side around the centre (shifted by up to 10 %), rotated by up to 15 degrees, mirrored half of
    the time, scaled to ``size``: the kind of map a training crop is."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w, *_ in shapes:
        side = rng.uniform(0.5, 1.2) * max(h, w)
        cx, cy = np.array([w, h]) / 2 + rng.uniform(-0.1, 0.1, 2) * side
        k = size / side
        a = np.deg2rad(rng.uniform(-15, 15))
        f = -1.0 if rng.random() < 0.5 else 1.0
        lin = np.diag([f * k, k]) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        t = np.array([size / 2, size / 2]) - lin @ np.array([cx, cy])
        out.append(np.hstack([lin, t[:, None]]).astype(np.float32))
    return out


def _warp(images: list[np.ndarray], matrices: list[np.ndarray], size: int, device: str) -> list[np.ndarray]:
    """``images`` (host RGB uint8) warped by ``warp_affine`` on ``device`` with the pipelines' settings
    (src->dst matrices, bilinear, float output, border clamped)."""
    from nvidia.dali import fn, pipeline_def, types  # late: DALI's graph API, only where a check runs

    @pipeline_def
    def graph():
        data = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        mats = fn.external_source(source=lambda: matrices, batch=True)
        return fn.warp_affine(data.gpu() if device == "gpu" else data, matrix=mats, size=[size, size],
                              inverse_map=False, dtype=types.FLOAT, interp_type=types.INTERP_LINEAR)

    (out,) = _run_once(graph, len(images), device)
    return _samples(out)


def decode_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """Every stored JPEG of the dot set decoded whole on the CPU and on ``other``: per image mean |diff|
    within DALI's bound, max |diff| within the derived one."""
    jpegs = _jpegs(dot_dir)
    cpu, dev = _decode(jpegs, "cpu"), _decode(jpegs, other)
    r = ParityResult("JPEG decode, libjpeg-turbo vs " + ("nvJPEG" if other == "gpu" else other.upper()))
    r.add("images decoded", len(dev), "==", len(cpu))
    r.add("images of another shape", sum(a.shape != b.shape for a, b in zip(cpu, dev)), "==", 0)
    pairs = [(a.astype(np.int16), b.astype(np.int16)) for a, b in zip(cpu, dev) if a.shape == b.shape]
    r.add("worst image's mean |diff| grey", max((float(np.abs(a - b).mean()) for a, b in pairs), default=0.0),
          "<=", JPEG_MEAN_GREY)
    r.add("max |diff| grey", max((_max_abs(a, b) for a, b in pairs), default=0.0), "<=", float(JPEG_MAX_GREY))
    return r


def warp_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """The same CPU-decoded pixels and matrices warped to 227 px on the CPU and on ``other``: max |diff|
    within the float32 bound."""
    images = _decode(_jpegs(dot_dir)[:16], "cpu")
    matrices = crop_matrices([im.shape for im in images], 227, seed=3)
    cpu, dev = _warp(images, matrices, 227, "cpu"), _warp(images, matrices, 227, other)
    r = ParityResult("warp_affine, CPU vs " + other.upper())
    pixel_figures(r, "warped pixels", np.stack(cpu), np.stack(dev), WARP_MAX_GREY)
    return r


def eval_crop_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """Evaluation crops (extension 1.5, 227 px, raw RGB 0-255) of the test split on the CPU and on
    ``other``: pixels within the crop bound; same people, targets, weights and crop boxes (sanity)."""
    kw = dict(batch_size=EVAL_BATCH, input_size=227, extension=1.5, normalize=False)
    cpu = list(dali.eval_batches(dot_dir, device="cpu", **kw))
    dev = list(dali.eval_batches(dot_dir, device=other, device_id=_device_id(other), **kw))
    r = ParityResult("eval crops, CPU vs " + other.upper())
    r.add("batch sizes (sanity)", [len(b["person_index"]) for b in dev], "==", EVAL_BATCH_SIZES)
    pairs = list(zip(cpu, dev))
    for key in ("person_index", "targets", "weights", "crop_box"):
        r.same(key, np.concatenate([a[key] for a, _ in pairs]), np.concatenate([b[key] for _, b in pairs]))
    pixel_figures(r, "pixels", np.concatenate([a["images"] for a, _ in pairs]),
                  np.concatenate([b["images"] for _, b in pairs]))
    return r


def train_crop_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """One augmented training batch (rotation 15 degrees, seed 3, raw RGB 0-255) on the CPU and on
    ``other``: pixels within the crop bound, the dot test on ``other``'s crops; same records, draws,
    targets, weights and crop boxes (sanity)."""
    kw = dict(batch_size=16, seed=3, normalize=False, augment=AugmentSpec(rotation=15.0))
    cpu = next(dali.train_batches(dot_dir, device="cpu", **kw))
    dev = next(dali.train_batches(dot_dir, device=other, device_id=_device_id(other), **kw))
    r = ParityResult("training batch, CPU vs " + other.upper())
    for key in ("meta", "draws", "targets", "weights", "crop_box"):
        r.same(key, cpu[key], dev[key])
    pixel_figures(r, "pixels", cpu["images"], dev["images"])
    d = dots.check_dots(dev["images"], dev["targets"], dev["weights"], dev["draws"][:, 4] > 0.5,
                        LSP.flip_permutation)
    r.add("dot label accuracy", float(d["label_accuracy"]), ">=", DOT_LABEL_ACCURACY)
    r.add("dot mean error px", float(d["mean_error_px"]), "<", DOT_MEAN_ERROR_PX)
    return r


def joint_crop_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """One batch of a cascade stage's training joint crops (sigma 1.5, seed 3, raw RGB 0-255, about
    estimates displaced by 0.1 torso diameters) on the CPU and on ``other``: pixels within the crop bound;
    same records, draws, targets, weights and crop boxes (sanity)."""
    from deeppose_fast.cascade.statistics import DisplacementStats
    from deeppose_fast.pipeline import joint_crops

    stats = DisplacementStats.isotropic(LSP.name, 0.01)
    table = joint_crops.RecordTable(contract.split_info(dot_dir, "train"))
    kw = dict(sigma=1.5, batch_size=16, input_size=227, seed=3, table=table, extras=True, normalize=False)
    cpu = next(joint_crops.stage_train_batches(None, stats, device="cpu", **kw))
    dev = next(joint_crops.stage_train_batches(None, stats, device=other, device_id=_device_id(other), **kw))
    r = ParityResult("joint crops, CPU vs " + other.upper())
    for i, key in enumerate(("targets", "weights", "crop_box", "draws", "rows")):
        r.same(key, cpu[i + 1], dev[i + 1])
    pixel_figures(r, "pixels", cpu[0], dev[0])
    return r


NORM_KW = dict(batch_size=8, seed=1, input_size=96)  # the normalised, float16 and tf.data checks


def normalised_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """Normalised float32 training crops (96 px, seed 1) and the raw crops of the same samples, on the
    CPU and on ``other``: each backend's normalisation against float64 ``contract.standardize`` of its own
    raw crops, and ``other``'s normalised crops against the CPU's within the per-pixel bound."""
    runs = {(dev, norm): next(dali.train_batches(dot_dir, device=dev, device_id=_device_id(dev),
                                                 normalize=norm, **NORM_KW))
            for dev in ("cpu", other) for norm in (False, True)}
    r = ParityResult("normalised crops, CPU vs " + other.upper())
    for (dev, norm), run in runs.items():
        r.same(f"draws ({dev}, normalize={norm})", runs["cpu", False]["draws"], run["draws"])
    for dev in dict.fromkeys(("cpu", other)):
        reference_figures(r, f"{dev} normalisation", runs[dev, False]["images"], runs[dev, True]["images"])
    normalised_figures(r, "normalised pixels", runs["cpu", False]["images"], runs["cpu", True]["images"],
                       runs[other, True]["images"])
    return r


def float16_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """Normalised NCHW crops (96 px, seed 1) on ``other`` as float16 and as float32: the float16 output
    within float16's rounding of the float32 one."""
    kw = dict(device=other, device_id=_device_id(other), layout="NCHW", **NORM_KW)
    f32, f32_again, f16 = (next(dali.train_batches(dot_dir, dtype=t, **kw))
                           for t in ("float32", "float32", "float16"))
    r = ParityResult(f"float16 output, {other.upper()}")
    r.same("draws", f32["draws"], f16["draws"])
    r.add("float16 shape", list(f16["images"].shape), "==", [NORM_KW["batch_size"], 3, 96, 96])
    half_figures(r, "float16 images", f16["images"], f32["images"], f32_again["images"])
    return r


def tf_memory_growth() -> None:
    """Let TensorFlow take GPU memory as it needs it (DALI and other processes share the GPUs); a no-op
    once TensorFlow has initialised its devices."""
    import tensorflow as tf  # late: only the checks that run TensorFlow need it

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised
            pass


def _device_name(tensor) -> str:
    """``GPU:0`` / ``CPU:0`` from a tensor's full device string."""
    return str(tensor.device).rsplit("device:", 1)[-1]


def dataset_parity(dot_dir: str | Path, other: str = "gpu") -> ParityResult:
    """What training reads: one batch of ``train_dataset(device=other)`` against ``train_dataset(
    device="cpu")`` (96 px, seed 1): on the right device, shapes and dtypes, pixels within the per-pixel
    normalised bound, a float16 dataset within float16's rounding of the float32 one; the same samples
    as the raw CPU crops the bound is computed from (sanity)."""
    tf_memory_growth()

    def first(device: str, dtype: str = "float32"):
        ds = dali.train_dataset(dot_dir, device=device, device_id=_device_id(device), dtype=dtype, **NORM_KW)
        return next(iter(ds))

    raw = next(dali.train_batches(dot_dir, device="cpu", normalize=False, **NORM_KW))
    cpu, dev, dev_again, dev16 = first("cpu"), first(other), first(other), first(other, "float16")
    r = ParityResult("tf.data train_dataset, CPU vs " + other.upper())
    r.same("targets (tf.data cpu vs raw batch)", raw["targets"], cpu[1].numpy())
    for i, name in ((1, "targets"), (2, "weights")):
        r.same(name, cpu[i].numpy(), dev[i].numpy())
        r.same(f"{name} (float16 dataset)", cpu[i].numpy(), dev16[i].numpy())
    want = f"{other.upper()}:{_device_id(other) or 0}"
    r.add("images device", _device_name(dev[0]), "==", want)
    r.add("float16 images device", _device_name(dev16[0]), "==", want)
    b, s = NORM_KW["batch_size"], NORM_KW["input_size"]
    r.add("images shape", list(dev[0].shape), "==", [b, s, s, 3])
    r.add("images dtype", dev[0].dtype.name, "==", "float32")
    normalised_figures(r, "normalised pixels", raw["images"], cpu[0].numpy(), dev[0].numpy())
    half_figures(r, "float16 dataset images", dev16[0].numpy(), dev[0].numpy(), dev_again[0].numpy())
    return r


CHECKS = (decode_parity, warp_parity, eval_crop_parity, train_crop_parity, joint_crop_parity, normalised_parity,
          float16_parity, dataset_parity)
