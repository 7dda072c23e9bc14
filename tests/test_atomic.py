"""deeppose_fast.atomic: a JSON document replaces the old one whole or not at all."""
from __future__ import annotations

import json

import pytest

from deeppose_fast import atomic


def test_write_json_round_trip_and_parents(tmp_path):
    path = atomic.write_json({"a": [1, 2.5], "b": None}, tmp_path / "x" / "y" / "doc.json", indent=1)
    assert path == tmp_path / "x" / "y" / "doc.json"
    assert json.loads(path.read_text()) == {"a": [1, 2.5], "b": None}
    assert path.read_text().endswith("\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["doc.json"]


def test_a_failed_write_keeps_the_old_document_and_no_temporary(tmp_path):
    path = atomic.write_json({"old": True}, tmp_path / "doc.json")
    with pytest.raises(TypeError):  # not JSON-serialisable, found half-way through the dump
        atomic.write_json({"new": 1, "bad": object()}, path)
    with pytest.raises(ValueError):  # NaN refused by the caller's dump arguments
        atomic.write_json({"new": float("nan")}, path, allow_nan=False)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]
