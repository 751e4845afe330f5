"""Checks of a restored database: row counts compared with the manifest."""

from __future__ import annotations

from tasks.recovery.integrity import compare_counts
from tasks.recovery.manifest import TableCount


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
