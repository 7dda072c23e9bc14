"""``deeppose-fast eval`` of a cascade snapshot (stage s >= 2): the whole cascade on a split, the tables of
every stage side by side (both protocols), every stage's report in the JSON, and a PNG of every stage's
PCKh curves beside it.

Legend: N people, K joints, T curve thresholds.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable

from deeppose_fast import metrics, scoring
from deeppose_fast.cascade import inference, links

FINE_THRESHOLD = 0.2  # the fine threshold the cascade is judged at (symmetric PCKh@0.2, dtf protocol)


def fine_scores(preds: dict, report: dict) -> dict:
    """The figures a refinement stage should move: symmetric PCKh at ``FINE_THRESHOLD`` and 0.5 and the
    PCKh curve's AUC (dtf protocol; NaN where not computable). ``report``: ``scoring.make_report`` of
    ``preds``, whose dtf result (at 0.5) gives the last two."""
    fine = metrics.evaluate(preds["pred"], preds["gt"], dataset=report["dataset"], protocol="dtf",
                            head_box=preds["head_box"], threshold=FINE_THRESHOLD)
    at_half = report["results"].get("dtf")
    at_half = None if isinstance(at_half, str) else at_half

    def symmetric(result):
        table = result.tables.get("Symmetric PCKh") if result is not None else None
        return float(table.total) if table is not None else math.nan

    return {f"symmetric_pckh@{FINE_THRESHOLD:g}": symmetric(fine), "symmetric_pckh@0.5": symmetric(at_half),
            "pckh_auc": float(at_half.curve.auc) if at_half is not None and at_half.curve is not None else math.nan}


def side_by_side(reports: list[dict], stages: list[int]) -> str:
    """Every table of every protocol with one column per stage: part rows, the total last."""
    lines = []
    head = "".join(f"  {'stage ' + str(s):>8}" for s in stages)
    for protocol in scoring.PROTOCOLS:
        results = [r["results"].get(protocol) for r in reports]
        if any(isinstance(r, str) or r is None for r in results):
            lines.append(f"[{protocol}] {next(r for r in results if isinstance(r, str) or r is None)}")
            continue
        for name, first in results[0].tables.items():
            tables = [r.tables[name] for r in results]
            width = max(len(name) + 2, *(len(p) for p in first.scores), len(first.total_name))
            lines.append(f"[{protocol}] {name}@{first.threshold:g}".ljust(width) + head)
            for part in first.scores:
                lines.append(f"{part:<{width}}" + "".join(f"  {t.scores.get(part, math.nan):>8.3f}" for t in tables))
            lines.append(f"{first.total_name:<{width}}" + "".join(f"  {t.total:>8.3f}" for t in tables))
    return "\n".join(lines)


def fine_table(fine: list[dict], stages: list[int]) -> str:
    names = list(fine[0])
    width = max(len(n) for n in names)
    lines = ["=== the cascade, dtf protocol".ljust(width) + "".join(f"  {'stage ' + str(s):>8}" for s in stages)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f"  {f[name]:>8.3f}" for f in fine))
    return "\n".join(lines)


def plot_curves(reports: list[dict], stages: list[int], path: str | os.PathLike, title: str) -> Path:
    """A PNG of every stage's PCK(h) curve, one panel per protocol, written atomically."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = [p for p in scoring.PROTOCOLS
              if all(not isinstance(r["results"].get(p), str) and r["results"].get(p) is not None
                     and r["results"][p].curve is not None for r in reports)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.2), squeeze=False)
    for ax, protocol in zip(axes[0], panels):
        for stage, report in zip(stages, reports):
            curve = report["results"][protocol].curve
            ax.plot(curve.thresholds, curve.values, label=f"stage {stage} (AUC {curve.auc:.3f})")
        name = reports[0]["results"][protocol].curve.name
        ax.set(xlabel=f"{name} threshold (fraction of the normaliser)", ylabel=f"{name} ({protocol} protocol)",
               ylim=(0, 1), xlim=(0, max(reports[0]["results"][protocol].curve.thresholds)))
        ax.axvline(FINE_THRESHOLD, color="0.8", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title(f"{protocol} protocol")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def score_cascade(snapshot, data=None, *, extension: float | None = None, batch_size: int = 128, limit: int = 0,
                  num_threads: int = 2, split: str = "test", out_json=None, echo: Callable[[str], None] = print,
                  note: Callable[[str], None] | None = None) -> dict:
    """Run a cascade snapshot's every stage on a split; print the tables side by side and write the JSON
    (every stage's report) and the PNG of the curves (``<json stem>-curves.png``).

    Args:
        snapshot: a stage-s checkpoint or run folder. extension: stage 1's test crop extension (default:
            stage 1's run's).
    Returns:
        the JSON document: ``checkpoint``, ``step``, ``data``, ``split``, ``extension``, ``stages`` (one dict
        per stage: ``stage``, ``checkpoint``, ``step``, ``sigma``, ``fine``, ``report``), ``curves_png``.
    Raises (each before the work): checkpoint.CheckpointError, links.CascadeError (a missing link),
        scoring.EvaluationError / OutputNotWritable, DatasetError, PipelineError, as ``score_checkpoint``.
    """
    stages = links.chain(snapshot)
    ckpt = stages[-1].ckpt
    ckpt, data = scoring.load_checkpoint(ckpt, data, note or echo)
    out_json = Path(out_json) if out_json else Path(ckpt.path) / f"eval-{split}.json"
    png = out_json.with_name(f"{out_json.stem}-curves.png")
    scoring.check_writable(out_json)
    extension = float(extension if extension is not None else stages[0].ckpt.test_extension)
    info, first_model = scoring.open_for_scoring(stages[0].ckpt, data, split, (extension,))
    echo(f"cascade of {len(stages)} stages: " + " -> ".join(f"{s.ckpt.path} (step {s.ckpt.step})" for s in stages))
    echo(f"data {data} split {split}, stage 1 extension {extension:g}, joint crops of "
         + ", ".join(f"{s.sigma:g}" for s in stages[1:]) + " torso diameters")
    t0 = time.time()
    preds = inference.predict(stages, info, extension=extension, split=split, batch_size=batch_size, limit=limit,
                              num_threads=num_threads, models=[first_model])
    reports = [scoring.make_report(p, info, extension, t0) for p in preds]
    numbers = [s.stage for s in stages]
    fine = [fine_scores(p, r) for p, r in zip(preds, reports)]
    echo(side_by_side(reports, numbers))
    echo(fine_table(fine, numbers))
    title = f"{ckpt.path}: {info.skeleton} {split}, {reports[0]['num_people']} people"
    plot_curves(reports, numbers, png, title)
    doc = {"checkpoint": str(ckpt.path), "step": ckpt.step, "data": str(data), "split": split,
           "extension": extension, "curves_png": str(png),
           "stages": [{"stage": s.stage, "checkpoint": str(s.ckpt.path), "step": s.ckpt.step, "sigma": s.sigma,
                       "fine": {k: scoring.jsonable(v) for k, v in f.items()}, "report": scoring.report_to_dict(r)}
                      for s, f, r in zip(stages, fine, reports)]}
    echo(f"wrote {scoring.write_json(doc, out_json)} and {png} ({time.time() - t0:.1f} s)")
    return doc

