"""The tar shard format of a prepared data set (see docs/ARCHITECTURE.md, "Shard format").

A prepared data set is a folder::

    manifest.json
    train-00000.tar  train-00000.idx  train-00001.tar ...
    test-00000.tar   test-00000.idx

Each tar is in the webdataset layout, members grouped by key in key order, per person (K joints):

- ``KEY.jpg``: JPEG bytes of the person's region, possibly stored at reduced resolution;
- ``KEY.pose.npy``: float32 (K, 4) ``x, y, annotated, visible`` in the JPEG's continuous pixel frame,
  ``x = y = 0`` where not annotated;
- ``KEY.meta.npy``: float32 (10,) ``head_x1, head_y1, head_x2, head_y2, offset_x, offset_y,
  person_index, image_id, scale_x, scale_y``: the head box in the JPEG's frame, the region's corner in
  the source image and its scale (JPEG pixels per source pixel), so that
  ``source = jpeg / scale + offset``.

``KEY`` is the 8-digit running index of the person over the whole data set. Each ``.idx`` is DALI's
webdataset index made by the ``wds2idx`` tool of the nvidia-dali wheel. A shard is written under a
temporary name and renamed when complete; ``manifest.json`` is written last, so a folder without it is
incomplete.

Modules: ``format`` (the record layout, names, indexes), ``writer`` (``ShardWriter``), ``manifest``
(``Manifest``), ``reader`` (checks and streaming).
"""
from deeppose_fast.datasets.shards.format import (DEFAULT_RECORDS_PER_SHARD, EXTENSIONS, FORMAT_VERSION, MANIFEST,
                                                  META_FIELDS, META_SCALE, POSE_FIELDS, NotPreparedError, Record, ShardError,
                                                  decode_record, encode_record, index_path, make_index, shard_name)
from deeppose_fast.datasets.shards.manifest import (PIXEL_CONVENTION, Manifest, read_manifest, rebuild_command,
                                                    rebuild_hint, scale_named, write_manifest)
from deeppose_fast.datasets.shards.reader import check_shard, iter_records, iter_shard, shard_paths
from deeppose_fast.datasets.shards.writer import ShardWriter

__all__ = ["DEFAULT_RECORDS_PER_SHARD", "EXTENSIONS", "FORMAT_VERSION", "MANIFEST", "META_FIELDS", "META_SCALE", "PIXEL_CONVENTION",
           "POSE_FIELDS", "Manifest", "NotPreparedError", "Record", "ShardError", "ShardWriter", "check_shard",
           "decode_record", "encode_record", "index_path", "iter_records", "iter_shard", "make_index",
           "read_manifest", "rebuild_command", "rebuild_hint", "scale_named", "shard_name", "shard_paths",
           "write_manifest"]
