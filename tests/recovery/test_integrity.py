"""Checks of a restored database compared with the manifest (pure functions)."""

from __future__ import annotations

from tasks.recovery.content import Content
from tasks.recovery.integrity import (
    NOT_RECORDED,
    compare_content,
    compare_counts,
    compare_large_objects,
    compare_sequences,
)
from tasks.recovery.manifest import LargeObjects, Manifest, SequenceValue, TableCount


def test_compare_counts_lists_every_difference():
    want = [TableCount(schema_name="public", table="a", rows=1),
            TableCount(schema_name="public", table="b", rows=2)]
    got = [TableCount(schema_name="public", table="a", rows=5),
           TableCount(schema_name="x", table="c", rows=0)]
    assert compare_counts(want, got) == [
        "table public.b missing after restore",
        "table x.c not in the manifest",
        "table public.a: 5 rows, manifest says 1",
    ]
    assert compare_counts(want, want) == []


def _seq(last: int, called: bool = True, inc: int = 1, name: str = "s") -> SequenceValue:
    return SequenceValue(schema_name="public", name=name, last_value=last, is_called=called,
                         increment=inc)


def test_sequences_behind_are_problems_ahead_are_counted():
    want = [_seq(10, name="a"), _seq(10, name="b"), _seq(-10, inc=-1, name="c"),
            _seq(5, name="gone")]
    got = [_seq(10, name="a"), _seq(9, called=False, name="b"), _seq(-12, inc=-1, name="c"),
           _seq(1, name="new")]
    problems, ahead = compare_sequences(want, got)
    assert problems == [
        "sequence public.gone missing after restore",
        "sequence public.new not in the manifest",
        "sequence public.b: next value 9, manifest says 11 (values would be handed out again)",
    ]
    assert ahead == 1  # c: descending, restored further down
    assert compare_sequences([_seq(4)], [_seq(5, called=False)]) == ([], 0)  # same next value


def test_large_objects_named_when_detailed_else_aggregate():
    want = LargeObjects(count=2, checksum="x", objects={1: "a", 2: "b"})
    got = LargeObjects(count=2, checksum="y", objects={1: "a", 3: "b"})
    assert compare_large_objects(want, got) == [
        "large object 2 missing after restore", "large object 3 not in the manifest"]
    assert compare_large_objects(want.model_copy(update={"objects": None}), got) == [
        "large objects: content differs from the manifest (aggregate checksum)"]
    assert compare_large_objects(want, want) == []


def test_old_manifest_checks_are_not_recorded_never_passed():
    old = Manifest.model_validate({
        "backup_id": "20261127T030000Z-full", "kind": "full", "database": "veza_db",
        "server_version": "15.8", "started_at": "2026-11-27T03:00:00Z",
        "finished_at": "2026-11-27T03:02:00Z", "data_key": "k", "size_bytes": 1,
        "sha256": "0" * 64, "plain_bytes": 1, "recipients": [], "tool_version": "old",
        "snapshot_consistent": True, "manifest_version": 1,
        "tables": [{"schema_name": "public", "table": "a", "rows": 1}],
    })
    restored = Content(
        tables=[TableCount(schema_name="public", table="a", rows=1, checksum="123")],
        sequences=[_seq(3)], large_objects=LargeObjects(count=0, checksum="z"))
    verdict = compare_content(old, restored)
    assert verdict.problems == []
    assert verdict.checks == [
        "row counts: 1 tables equal",
        f"table checksums: {NOT_RECORDED}", f"sequences: {NOT_RECORDED}",
        f"large objects: {NOT_RECORDED}",
    ]
    other = old.model_copy(update={
        "content_method": "v0", "tables": [restored.tables[0].model_copy(update={"checksum": "9"})],
    })
    assert "table checksums: not compared (recorded with another method: v0)" in (
        compare_content(other, restored).checks)
