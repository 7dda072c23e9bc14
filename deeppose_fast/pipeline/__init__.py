"""Input pipelines: person crops from the prepared shards.

- ``contract``: what both loaders share: split info, errors, training draws, labels in source-image
  pixels, the one normalisation, the input device (no DALI, TensorFlow or OpenCV at import);
- ``dali``: the DALI training and evaluation pipelines (``train_dataset``, ``train_batches``,
  ``eval_batches``; ``@pipeline_def`` graphs), CPU or GPU backend; ``failures``: DALI's failures named
  (the shard or record at fault);
- ``native``: loads the ``PoseCrop`` operator built from csrc/;
- ``reference``: the same work with OpenCV and NumPy (parity checks and benchmarks).

Import the submodules explicitly (``from deeppose_fast.pipeline import dali``): ``dali`` loads DALI.
"""
