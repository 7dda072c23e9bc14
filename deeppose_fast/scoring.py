"""Scoring a model or checkpoint on a prepared data set's test split, under both metric protocols.

Shapes: N people, K joints. Predictions are made on the test crop (a fixed box extension around the
ground-truth joints, no shift, as the reference's test script), decoded to source-image pixels with
``codec.decode`` and scored with ``deeppose_fast.metrics.evaluate`` (protocols ``dtf`` and ``official``).

``score_checkpoint`` (what ``deeppose-fast eval`` runs) loads a checkpoint and the split once, sweeps the
box extension (default 1.0, 1.1, ..., 2.0, as DTF's test script) and writes every table as JSON;
``score_model`` scores one extension (also what training runs every ``eval_every`` steps).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from deeppose_fast import atomic, checkpoint, codec, metrics
from deeppose_fast.datasets import precrop, shards
from deeppose_fast.model import pose_loss
from deeppose_fast.pipeline import dali
from deeppose_fast.pipeline.contract import SplitInfo, as_split

PROTOCOLS = ("dtf", "official")
DEFAULT_EXTENSIONS = tuple(round(1.0 + 0.1 * i, 1) for i in range(11))


class EvaluationError(ValueError):
    """An evaluation cannot start: its data set or output is not where it should be (the message names
    the path)."""


class OutputNotWritable(EvaluationError):
    """The folder of the results file cannot take a new file (the message names it)."""


def check_writable(path: str | os.PathLike) -> None:
    """Fail before the work, not after it, when ``path`` cannot be written: create its folder (as the final
    write would) and create and remove a probe file there (what permissions and read-only mounts
    allow, not what the mode bits suggest)."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{Path(path).name}.probe-"):
            pass
    except OSError as e:
        raise OutputNotWritable(f"{folder}: cannot write {Path(path).name} there "
                                f"({e.strerror or e})") from None


def recorded_data(ckpt) -> tuple[Path, str | None]:
    """The prepared data folder a checkpoint was trained on, from its config's ``data``.

    A relative path is tried from the current directory first, then from the folder training ran in
    (the run folder minus the config's relative ``out``, e.g. ``/x`` for ``/x/runs/a`` and ``out =
    runs/a``), so that a run evaluated from another directory still finds its data.
    Returns ``(folder, note)``: ``note`` says which folder was chosen when it is not the recorded path as
    given. Raises ``EvaluationError`` (naming the recorded path) when neither place has it.
    """
    cfg = ckpt.meta.get("config") or {}
    meta_file = Path(ckpt.path) / "meta.json"
    data = cfg.get("data")
    if not data:
        raise EvaluationError(f"{meta_file}: records no data set; pass --data DIR")
    data = Path(data)
    if data.exists():
        return data, None
    tried = [f"the current directory ({Path.cwd()})"] if not data.is_absolute() else []
    base = _training_folder(Path(ckpt.path), cfg.get("out"))
    if base is not None and not data.is_absolute():
        candidate = base / data
        if (candidate / shards.MANIFEST).is_file():
            return candidate, (f"data: {data} (recorded in the checkpoint) is not in the current directory; "
                               f"using {candidate}, the same path from the folder training ran in")
        tried.append(str(base))
    where = f" (looked in {' and '.join(tried)})" if tried else ""
    raise EvaluationError(f"{data}: the data set recorded in {meta_file} does not exist{where}; "
                          f"pass --data DIR (a folder made by `deeppose-fast prepare`)")


def _training_folder(ckpt_path: Path, out) -> Path | None:
    """The directory training ran in, if the checkpoint sits in ``<dir>/<out>/checkpoints/ckpt-N`` with
    ``out`` the relative run folder its config records; else None."""
    if not out or Path(out).is_absolute():
        return None
    run = ckpt_path.resolve().parent
    if run.name == "checkpoints":
        run = run.parent
    parts = Path(out).parts
    if run.parts[-len(parts):] != parts:
        return None
    return Path(*run.parts[:-len(parts)])


def open_split(data: str | os.PathLike | SplitInfo, split: str = "test") -> SplitInfo:
    """A split's layout and shards, read from the manifest (once; a ``SplitInfo`` passes through, so a
    sweep reads the manifest once and hands the result to every extension). Raises ``PipelineError``
    (missing, incomplete or damaged data set) or ``EvaluationError`` (a layout the metrics do not know)."""
    info = as_split(data, None, split)  # a SplitInfo (of any split) as it is, a folder's ``split`` read
    if info.skeleton not in metrics.DATASETS:
        raise EvaluationError(f"{Path(info.shard_dir) / shards.MANIFEST}: skeleton {info.skeleton!r} has no "
                              f"metric protocol (known: {', '.join(metrics.DATASETS)})")
    return info


_INFER: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def inference_fn(model) -> Callable:
    """``model(x, training=False)`` as a ``tf.function``, traced once per model and input shape (kept
    while the model lives), so that repeated evaluations do not trace it again."""
    fn = _INFER.get(model)
    if fn is None:
        fn = _INFER[model] = tf.function(lambda x: model(x, training=False))
    return fn


def predict_split(model, data: str | os.PathLike | SplitInfo, *, extension: float,
                  batch_size: int = 128, split: str = "test", limit: int = 0, num_threads: int = 2,
                  flip_test: bool = False, flip_perm=None) -> dict:
    """Run ``model`` over a split's test crops.

    Args:
        data: a prepared folder or its split (``open_split``). flip_perm: (K,) label permutation of a
            mirrored crop (default: the split's).
    Returns a dict of NumPy arrays over the N people evaluated (``limit`` > 0 keeps the first N):
        ``pred`` (N, K, 2) and ``gt`` (N, K, 2) source-image pixels (gt NaN = not annotated);
        ``targets_pred`` (N, K, 2) crop-frame outputs; ``visible`` (N, K); ``head_box`` (N, 4);
        ``crop_box`` (N, 4); ``person_index`` (N,); ``pose_loss`` (float, the training loss on the test
        crops).
    """
    info = open_split(data, split)
    flip_perm = info.flip_perm if flip_perm is None else flip_perm
    input_size = int(model.input_shape[1])

    infer = inference_fn(model)
    parts: dict[str, list] = {k: [] for k in ("pred", "gt", "targets_pred", "visible", "head_box",
                                                "crop_box", "person_index")}
    loss_sum, n = 0.0, 0
    for batch in dali.eval_batches(info, batch_size=batch_size, input_size=input_size, extension=extension,
                                   num_threads=num_threads):
        if limit and n >= limit:
            break
        keep = len(batch["images"]) if not limit else min(len(batch["images"]), limit - n)
        out = infer(tf.constant(batch["images"][:keep])).numpy()
        if flip_test:
            # Average with the prediction on the mirrored crop, mapped back (x -> -x, labels swapped).
            back = infer(tf.constant(batch["images"][:keep, :, ::-1])).numpy().reshape(keep, -1, 2)
            back = back[:, list(flip_perm)] * np.array([-1.0, 1.0], np.float32)
            out = 0.5 * (out + back.reshape(keep, -1))
        t = out.reshape(keep, -1, 2)
        loss_sum += float(pose_loss(out, batch["targets"][:keep], batch["weights"][:keep])) * keep
        parts["targets_pred"].append(t)
        parts["pred"].append(codec.decode(t, batch["crop_box"][:keep]))
        for k in ("visible", "head_box", "crop_box", "person_index"):
            parts[k].append(batch[k][:keep])
        parts["gt"].append(batch["joints"][:keep])
        n += keep
    if n == 0:
        raise ValueError(f"{info.shard_dir}: split {info.split!r} has no people to evaluate")
    res = {k: np.concatenate(v) for k, v in parts.items()}
    res["pose_loss"] = loss_sum / n
    return res


def prediction_spread(targets_pred: np.ndarray, gt: np.ndarray, crop_box: np.ndarray) -> float:
    """How much predictions vary across people relative to the ground truth, in the crop frame: the mean
    over joints of std(pred) / std(gt). Near 0 = collapsed to one mean pose; near 1 = as varied as the
    truth."""
    t_gt = codec.encode(gt, crop_box)
    ratios = []
    for j in range(t_gt.shape[1]):
        ok = np.all(np.isfinite(t_gt[:, j]), axis=-1)
        if ok.sum() < 2:
            continue
        sd_gt = np.std(t_gt[ok, j], axis=0).mean()
        if sd_gt > 0:
            ratios.append(np.std(targets_pred[ok, j], axis=0).mean() / sd_gt)
    return float(np.mean(ratios)) if ratios else math.nan


def score(preds: dict, dataset: str) -> dict:
    """``{protocol: EvalResult or error message}`` for both protocols."""
    results = {}
    for protocol in PROTOCOLS:
        try:
            results[protocol] = metrics.evaluate(preds["pred"], preds["gt"], dataset=dataset,
                                                 protocol=protocol, head_box=preds["head_box"])
        except ValueError as e:  # e.g. official MPII without head boxes
            results[protocol] = f"not computed: {e}"
    return results


def score_model(model, data: str | os.PathLike | SplitInfo, *, extension: float,
                batch_size: int = 128, limit: int = 0, num_threads: int = 2, split: str = "test",
                flip_test: bool = False) -> dict:
    """Predict and score one extension on a prepared folder or its split (``open_split``, which a caller
    scoring several times reads once). Returns a report dict: ``dataset``, ``split``, ``extension``,
    ``num_people``, ``pose_loss``, ``spread``, ``results`` {protocol: EvalResult | str}, ``seconds``,
    ``flip_test``, ``headline`` (see ``headline``)."""
    t0 = time.time()
    info = open_split(data, split)
    preds = predict_split(model, info, extension=extension, batch_size=batch_size, limit=limit,
                          num_threads=num_threads, flip_test=flip_test)
    return make_report(preds, info, extension, t0, flip_test=flip_test)


def make_report(preds: dict, info: SplitInfo, extension: float, t0: float, *, flip_test: bool = False) -> dict:
    """The report (``score_model``'s) of predictions ``preds`` (``predict_split``'s dict) on ``info``'s
    split at test extension ``extension``; ``t0`` is when the work started."""
    report = {"dataset": info.skeleton, "split": info.split, "extension": extension,
              "num_people": len(preds["pred"]), "pose_loss": preds["pose_loss"],
              "spread": prediction_spread(codec.encode(preds["pred"], preds["crop_box"]), preds["gt"],
                                          preds["crop_box"]),
              "results": score(preds, info.skeleton), "seconds": time.time() - t0, "flip_test": flip_test}
    report["headline"] = headline(report)
    return report


def _table_total(result, name):
    if isinstance(result, str) or name not in result.tables:
        return math.nan
    return float(result.tables[name].total)


def headline(report: dict) -> dict:
    """The numbers the reference's log leads with (dtf protocol) plus the official totals."""
    dtf, off = report["results"].get("dtf"), report["results"].get("official")
    return {"pose_loss": report["pose_loss"], "mPCP": _table_total(dtf, "PCP"),
            "mPCKh": _table_total(dtf, "PCKh"), "mSymmetricPCKh": _table_total(dtf, "Symmetric PCKh"),
            "official_total": math.nan if isinstance(off, str) or off is None else float(off.total),
            "spread": report["spread"]}


def format_report(report: dict) -> str:
    """Text as the reference's training log prints it: pose loss, mPCP and the PCP table, mPCKh and the
    symmetric PCKh table, for both protocols."""
    h = report["headline"]
    lines = [f"pose loss {h['pose_loss']:.5f} | mPCP {h['mPCP']:.3f} | mPCKh {h['mPCKh']:.3f} | "
             f"mSymmetricPCKh {h['mSymmetricPCKh']:.3f} | prediction spread {h['spread']:.2f} "
             f"(dtf protocol, extension {report['extension']:g}, {report['num_people']} people"
             f"{', flip test' if report.get('flip_test') else ''})"]
    for protocol, result in report["results"].items():
        lines.append(f"[{protocol}]")
        lines.append(result if isinstance(result, str) else result.table())
    return "\n".join(lines)


def summary_scalars(report: dict) -> dict:
    """TensorBoard scalars of one report."""
    out = {f"test/{k}": v for k, v in report["headline"].items()}
    for protocol, result in report["results"].items():
        if isinstance(result, str):
            continue
        for tname, table in result.tables.items():
            tag = tname.replace(" ", "_")
            out[f"test_{protocol}/{tag}/{table.total_name}"] = table.total
            for part, value in table.scores.items():
                out[f"test_{protocol}/{tag}/{part.replace(' ', '_')}"] = value
    return out


def jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def report_to_dict(report: dict) -> dict:
    return {"dataset": report["dataset"], "split": report["split"], "extension": report["extension"],
            "flip_test": report.get("flip_test", False),
            "num_people": report["num_people"], "pose_loss": jsonable(report["pose_loss"]),
            "spread": jsonable(report["spread"]),
            "headline": {k: jsonable(v) for k, v in report["headline"].items()},
            "results": {p: (r if isinstance(r, str) else r.to_dict()) for p, r in report["results"].items()}}


def curve_record(report: dict) -> dict:
    return {k: jsonable(v) for k, v in report["headline"].items()}


def sweep_table(reports: list[dict]) -> str:
    """One line per extension: the dtf headline numbers and the official total."""
    lines = ["=== summary over extensions (dtf protocol; official = the official protocol's total)",
             f"{'extension':>9}  {'pose loss':>9}  {'mPCP':>6}  {'mPCKh':>6}  {'mSymPCKh':>8}  "
             f"{'official':>8}  {'spread':>6}"]
    for r in reports:
        h = r["headline"]
        lines.append(f"{r['extension']:>9g}  {h['pose_loss']:>9.5f}  {h['mPCP']:>6.3f}  {h['mPCKh']:>6.3f}  "
                     f"{h['mSymmetricPCKh']:>8.3f}  {h['official_total']:>8.3f}  {h['spread']:>6.2f}")
    return "\n".join(lines)


def write_json(doc: dict, path: str | os.PathLike) -> Path:
    """Write ``doc`` to ``path`` atomically (``atomic.write_json``)."""
    return atomic.write_json(doc, path, indent=2)


def load_checkpoint(snapshot: str | os.PathLike | checkpoint.Checkpoint, data, note: Callable[[str], None]):
    """``(checkpoint, data)``: the snapshot loaded once (a checkpoint folder, a run folder: its newest, or a
    loaded ``Checkpoint``) and the data set, ``data`` or the one the run recorded (``recorded_data``;
    ``note`` prints its remark)."""
    ckpt = snapshot if isinstance(snapshot, checkpoint.Checkpoint) else checkpoint.load(snapshot)
    if data is None:
        data, remark = recorded_data(ckpt)
        if remark:
            note(remark)
    return ckpt, data


def open_for_scoring(ckpt: checkpoint.Checkpoint, data, split: str, extensions) -> tuple[SplitInfo, object]:
    """``(split, model)``: the split read once (``open_split``) and the checkpoint's network built for its
    joints, after checking that the evaluation crops at ``extensions`` fit the regions the data set stored
    and are not upsampled from them (``precrop.require_covers``)."""
    info = open_split(data, split)
    model = checkpoint.build_model(ckpt, expect_joints=info.num_joints)
    precrop.require_covers(info.shard_dir, precrop.eval_augment(*extensions), int(model.input_shape[1]),
                           manifest=info.manifest)
    return info, model


def score_checkpoint(snapshot: str | os.PathLike | checkpoint.Checkpoint,
                     data: str | os.PathLike | None = None, *, extensions=DEFAULT_EXTENSIONS,
                     batch_size: int = 128, limit: int = 0, num_threads: int = 2, split: str = "test",
                     out_json: str | os.PathLike | None = None,
                     echo: Callable[[str], None] = print, note: Callable[[str], None] | None = None,
                     flip_test: bool = False) -> dict:
    """Score a checkpoint over a sweep of test-crop extensions, print each report and the sweep's
    summary, and write them all as JSON. The checkpoint is loaded once and the manifest read once.

    Args:
        snapshot: a checkpoint folder, a run folder (its newest checkpoint) or a loaded ``Checkpoint``.
        data: the prepared folder; None: the one the checkpoint's run was trained on (``recorded_data``).
        out_json: where the JSON goes; None: ``<checkpoint>/eval-<split>.json``.
        echo: prints the reports; note: prints remarks on the choices made (default: ``echo``).
    Returns:
        the JSON document: ``checkpoint``, ``step``, ``data``, ``split``, ``reports`` (one per extension).
    Raises (each before the sweep, on the user's files):
        checkpoint.CheckpointError: missing or corrupt snapshot, or trained for another joint count.
        DatasetError: the sweep's crops need more context or resolution than the data set stored.
        EvaluationError: no data set recorded or found; OutputNotWritable: ``out_json`` cannot be written.
        pipeline.contract.PipelineError: the data set is missing, incomplete or damaged.
    """
    ckpt, data = load_checkpoint(snapshot, data, note or echo)
    out_json = Path(out_json) if out_json else Path(ckpt.path) / f"eval-{split}.json"
    check_writable(out_json)
    info, model = open_for_scoring(ckpt, data, split, extensions)
    echo(f"checkpoint {ckpt.path} (step {ckpt.step}), data {data} split {split}")
    reports = []
    for ext in extensions:
        report = score_model(model, info, extension=float(ext), batch_size=batch_size, limit=limit,
                             num_threads=num_threads, flip_test=flip_test)
        echo(f"=== extension {ext:g}")
        echo(format_report(report))
        reports.append(report)
    echo(sweep_table(reports))
    doc = {"checkpoint": str(ckpt.path), "step": ckpt.step, "data": str(data), "split": split,
           "reports": [report_to_dict(r) for r in reports]}
    echo(f"wrote {write_json(doc, out_json)}")
    return doc
