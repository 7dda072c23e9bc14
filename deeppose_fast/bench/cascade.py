"""Stage 6, the cascade: the joint-crop pipeline beside the person-crop pipeline, and people/s of the
cascade at inference.

- Joint crops: the ``pipeline`` stage's loaders ``dali-cpu`` (person crops, the preset's recipe) and
  ``dali-cpu-joints`` (a cascade stage's training crops), plus their GPU twins where DALI sees a GPU:
  crops/s and CPU s per 1000 crops, interleaved as the pipeline stage measures them.
- Inference: ``cascade.inference.predict`` over the test split with the preset's network (random weights:
  the work does not depend on them) as stage 1 alone (``stage1``: one person crop each) and as a two-stage
  cascade (``stage1+2``: then K joint crops each); people/s, each job in its own process.
"""
from __future__ import annotations

import time

from deeppose_fast.bench import core, pipeline

JOBS = ("stage1", "stage1+2")


def worker(p: dict) -> dict:
    """People/s of one inference job over the test split (``p["name"]`` in ``JOBS``)."""
    import keras

    from deeppose_fast import config
    from deeppose_fast import model as model_lib
    from deeppose_fast.cascade import inference, links
    from deeppose_fast.pipeline import joint_crops
    from deeppose_fast.pipeline.contract import split_info

    info = split_info(p["data"], "test")
    cfg = config.preset(p["preset"], input_size=p["input_size"])
    # stage 2 as the preset's cascade builds it, where it has one (a joint-conditioned network, its sigma)
    later = f"{p['preset']}-stage2"
    stage2 = config.preset(later, input_size=p["input_size"]) if later in config.PRESETS else cfg
    keras.utils.set_random_seed(0)
    t0 = time.perf_counter()
    configs = [cfg.replace(joint_input=False)] + ([] if p["name"] == "stage1" else [stage2])
    models = [model_lib.build(c.model, info.num_joints) for c in configs]
    stages = [links.Stage(i + 1, None, c.sigma) for i, c in enumerate(configs)]  # models given: no checkpoints
    table = joint_crops.RecordTable(info) if len(models) > 1 else None
    setup_s = time.perf_counter() - t0

    def step():
        preds = inference.predict(stages, info, extension=cfg.test_extension, batch_size=p["batch_size"],
                                  limit=p["people"], num_threads=p["threads"], models=models, table=table)
        return len(preds[-1]["pred"])

    timing = core.measure_rate(step, warmup=1, repeats=p["repeats"], unit="people/s")
    return {**timing.to_dict(), "setup_s": setup_s, "peak_rss_mib": core.peak_rss_mb(),
            "people": p["people"], "crops_per_person": 1 + (info.num_joints if len(models) > 1 else 0)}


def measure(s, data, num_joints: int) -> dict:
    """Both measurements for the runner's resolved ``Settings``."""
    from deeppose_fast import config
    from deeppose_fast.pipeline.contract import gpu_available

    loaders = ["dali-cpu", "dali-cpu-joints"] + (["dali-gpu", "dali-gpu-joints"] if gpu_available() else [])
    crops = pipeline.run(data, loaders=loaders, batch_size=s.batch_size, input_size=s.input_size,
                         batches=s.batches, rounds=s.rounds, threads=s.threads,
                         augment=config.preset(s.preset).augment, warmup=s.warmup, repeats=s.repeats,
                         seconds=s.seconds, timeout=s.timeout)
    people = min(256, 4 * s.batch_size)
    params = {"data": str(data), "preset": s.preset, "input_size": s.input_size, "batch_size": s.batch_size,
              "threads": s.threads, "repeats": s.repeats, "people": people, "warmup": 1, "batches": people}
    inference_rows = core.compare("cascade", "jobs", list(JOBS), JOBS, params, s.rounds, timeout=s.timeout)
    return {"params": {**crops["params"], "people": people}, "crops": crops, "inference": inference_rows,
            "rows": crops["rows"] + inference_rows["rows"]}


def markdown(stage: dict) -> str:
    crops, inf = stage["crops"], stage["inference"]
    lines = [pipeline.markdown(crops).rstrip("\n"), ""]
    person = next((r for r in crops["rows"] if r["name"] == "dali-cpu"), None)
    joint = next((r for r in crops["rows"] if r["name"] == "dali-cpu-joints"), None)
    if person and joint:
        lines += [f"Joint crops / person crops on CPU operators: {joint['median'] / person['median']:.2f}x the "
                  f"crops/s, {joint['cpu_s_per_1000'] / person['cpu_s_per_1000']:.2f}x the CPU s per crop.", ""]
    p = inf["params"]
    lines += [f"Inference over the first {p['people']} test people, batch {p['batch_size']}, "
              f"{core.repeats_note({**p, 'batches': p['people']}, 'people')}.", ""]
    lines += core.table(["cascade", "people/s (median)", "spread", "crops per person", "CPU s / 1000 people",
                         "peak RSS MiB"],
                        [[r["name"], *core.rate_cells(r), f"{r['crops_per_person']:.0f}",
                          f"{r['cpu_s_per_1000']:.2f}", f"{r['peak_rss_mib']:.0f}"] for r in inf["rows"]])
    return "\n".join(lines) + "\n"
