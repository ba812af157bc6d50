"""JSON-lines writers: the bytes the hand-written versions produced, atomic or whole-line."""

from __future__ import annotations

import json

import pytest

from byorn.fileio import append_jsonl, write_jsonl

ROWS = [{"id": "a", "score": 1.5, "text": "café"}, {"id": "b", "score": None, "nested": [1, {"x": True}]}]


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_write_jsonl_writes_one_compact_line_per_row(tmp_path, ensure_ascii):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, iter(ROWS), ensure_ascii=ensure_ascii)
    expected = "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in ROWS)
    assert path.read_bytes() == expected.encode("utf-8")
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == ROWS
    assert ("café" in path.read_text(encoding="utf-8")) is not ensure_ascii


def test_write_jsonl_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, ROWS)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl(path, [{"ok": 1}, {"bad": object()}])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]
    write_jsonl(path, [])
    assert path.read_bytes() == b""


def test_append_jsonl_adds_whole_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    for row in ROWS:
        append_jsonl(path, row)
    append_jsonl(path, ROWS[0], ensure_ascii=False)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [*ROWS, ROWS[0]]
    assert "\\u00e9" in lines[0] and "café" in lines[2]
