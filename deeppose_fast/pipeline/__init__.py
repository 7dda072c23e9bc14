"""Input pipelines: person crops from the prepared shards.

- ``dali``: the DALI training and evaluation pipelines (``train_dataset``, ``train_batches``,
  ``eval_batches``), CPU or GPU backend;
- ``native``: loads the ``PoseCrop`` operator built from csrc/;
- ``reference``: the same work with OpenCV and NumPy (parity checks and benchmarks);
- ``dots``: synthetic dot people for the dot test and benchmarks.

Submodules import DALI / TensorFlow lazily; import them explicitly
(``from deeppose_fast.pipeline import dali``).
"""
