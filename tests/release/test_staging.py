"""Staging rollout: the set-image patch and the undo's report (pure parts)."""

from __future__ import annotations

from typing import Any

from errors import RolloutError
from tasks.release.staging import image_patch
from tasks.release.undo import UndoReport, tell_with


def test_undo_sentence_names_what_was_put_back_and_what_was_not():
    undo = UndoReport(restored={"api": "api:1"}, unchanged=["chat"], failed={"web": "500"})
    assert undo.sentence() == ("staging undone: api back on api:1; staging undo FAILED for "
                               "web (500): put it back by hand")
    assert UndoReport(unchanged=["chat"]).sentence() == ""
    assert [(n, p) for n, p, _ in undo.checks("staging")] == [
        ("staging undo api", True), ("staging undo chat", True), ("staging undo web", False)]


def test_the_undo_is_told_in_the_cause_which_stays_the_error_raised():
    cause = RolloutError("rollout of web failed", hint="check the image")
    tell_with(cause, "staging undone: web back on web:1")
    assert isinstance(cause, RolloutError) and cause.hint == "check the image"
    assert str(cause) == ("rollout of web failed; staging undone: web back on web:1 "
                          "-- check the image")
    other = KeyboardInterrupt()
    tell_with(other, "staging undone: web back on web:1")
    assert other.__notes__ == ["staging undone: web back on web:1"]


def test_image_patch_is_a_strategic_merge_on_the_container_name():
    dep: dict[str, Any] = {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "web:1", "envFrom": [{"secretRef": {"name": "web-secrets"}}]},
    ]}}}}
    assert image_patch(dep, container="web", image="web:2") == {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}
    patch = image_patch(dep, container="web", image="web:2", secret_prefix="web-secrets",
                        secret_name="web-secrets-abc")
    entry = patch["spec"]["template"]["spec"]["containers"][0]
    assert entry["envFrom"] == [{"secretRef": {"name": "web-secrets-abc"}}]
    assert dep["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"][
        "name"] == "web-secrets"
