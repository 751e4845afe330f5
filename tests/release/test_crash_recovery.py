"""After a crash: the rollback target from the records (pure), and a SIGKILLed release undone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tasks.release.history import ReleaseRecord
from tasks.release.rollback import choose_target, mark_crashed
from tests.release import helpers as h
from tests.release.test_rollback import CATALOGUE


def rec(i: int, outcome: str = "succeeded", *, run: str | None = None,
        colours: bool = True) -> ReleaseRecord:
    return ReleaseRecord(id=f"2026010{i}T000000Z", environment="production",
                         version=f"1.{i}.0", started_at=datetime.now(UTC), outcome=outcome,
                         flow_run_id=run, images={"veza-web": f"veza/web:1.{i}.0"},
                         previous_images={"veza-web": f"veza/web:1.{i - 1}.0"},
                         colours={"veza-web": "green"} if colours else {},
                         secrets={"veza-web": f"veza-web-secrets-{i}"})


@pytest.mark.parametrize("outcome", ["crashed", "running", "failed", "cancelled"])
def test_after_an_interrupted_release_the_target_is_the_last_committed(outcome):
    target = choose_target([rec(1), rec(2), rec(3, outcome, colours=False)], CATALOGUE,
                           None, None)
    assert target.label == "1.2.0"
    assert target.images == {"veza-web": "veza/web:1.2.0"}
    assert target.secrets == {"veza-web": "veza-web-secrets-2"}
    assert target.previous_images == {"veza-web": "veza/web:1.3.0"}


def test_a_release_crashed_after_its_commit_is_rolled_back_like_a_success():
    target = choose_target([rec(1), rec(2, "crashed")], CATALOGUE, None, None)
    assert target.label == "before 1.2.0" and target.images == {"veza-web": "veza/web:1.1.0"}


def test_running_records_of_finished_runs_are_marked_crashed():
    history = [rec(1), rec(2, "running", run="dead", colours=False),
               rec(3, "running", run="alive", colours=False),
               rec(4, "running", run="gone", colours=False),
               rec(5, "running", run="me", colours=False)]
    states = {"dead": "CRASHED", "alive": "RUNNING", "gone": None, "me": "RUNNING"}
    marked = mark_crashed(history, states.__getitem__, own_run="me")
    assert [(r.id, r.outcome) for r in marked] == [(rec(2).id, "crashed"), (rec(4).id, "crashed")]
    assert "CRASHED" in (marked[0].reason or "") and "gone" in (marked[1].reason or "")
    assert marked[0].finished_at is not None


# --- against the sandbox: SIGKILL after the first switch, shipped lock settings -------------



def seed_record(core, namespace: str, version: str, previous: str) -> None:
    """The seeded state, as the release that made it would have recorded it (committed)."""
    from tasks.release.history import record_release

    now = datetime.now(UTC)
    record_release(core, namespace, ReleaseRecord(
        id=ReleaseRecord.new_id(now, "seeded"), environment="production", version=version,
        started_at=now, finished_at=now, outcome="succeeded", triggered_by="test",
        images={n: f"{repo}:{version}" for n, (repo, _, _) in h.SERVICES.items()},
        previous_images={n: f"{repo}:{previous}" for n, (repo, _, _) in h.SERVICES.items()},
        colours={n: "blue" for n in h.ORDER}, previous_colours={n: "green" for n in h.ORDER}))


@pytest.mark.timeout(480)
def test_killed_release_is_rolled_back_at_once_to_the_last_committed(
        prefect_harness, sandbox_stack, sandbox_namespaces, tmp_path):
    from kubernetes import client as k8s
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from errors import LockHeldError
    from flows.rollback import rollback
    from tasks.release.history import release_history
    from tasks.release.leases import LEASE_NAME, RUN_ANNOTATION

    staging, production = sandbox_namespaces
    apps, core = h.apis(sandbox_stack)
    coordination = k8s.CoordinationV1Api(core.api_client)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns=staging,
                                  production_ns=production, blocks=blocks,
                                  e2e_command=["{python}", "-c", "pass"], intervals=2,
                                  keep_old_colour_s=0, lock_ttl_s=900, lock_wait_s=0)
    seed_record(core, production, "1.0.0", "0.9.0")
    h.push_all(sandbox_stack, "0.9.0")  # a rollback one release too far would succeed
    h.push_all(sandbox_stack, "4.0.0")
    h.release_killed_after_first_switch(sandbox_stack, production=production,
                                        catalogue=catalogue, version="4.0.0", workdir=tmp_path)

    # The killed run left its Lease (naming its flow run) and a `running` record.
    lease = coordination.read_namespaced_lease(LEASE_NAME, production)
    run_id = lease.metadata.annotations[RUN_ANNOTATION]
    left = [r for r in release_history(core, production) if r.flow_run_id == run_id]
    assert [r.outcome for r in left] == ["running"]
    # Its run is still Running for Prefect: the lock is kept.
    with pytest.raises(LockHeldError):
        rollback(environment="production", catalogue_path=str(catalogue))

    with get_client(sync_client=True) as client:  # what the zombie automation does
        client.set_flow_run_state(run_id, Crashed(message="no heartbeat"), force=True)
    summary = rollback(environment="production", catalogue_path=str(catalogue),
                       triggered_by="test")

    assert summary.outcome == "succeeded"
    assert any("never committed" in line for line in summary.reconciled)
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    assert {n: i for n, (i, _) in h.images(apps, production, "blue").items()} == {
        n: f"{repo}:1.0.0" for n, (repo, _, _) in h.SERVICES.items()}
    history = release_history(core, production)
    killed = next(r for r in history if r.flow_run_id == run_id)
    assert killed.outcome == "crashed" and "CRASHED" in (killed.reason or "")
    rolled = history[-1]
    assert (rolled.kind, rolled.version, rolled.triggered_by) == ("rollback", "1.0.0", "test")
    assert any("taken from" in c.detail and run_id in c.detail for c in rolled.checks)


KILLED = ["veza-backend-api", "veza-chat-server"]  # released by the SIGKILL matrix


def _green_up_blue_serving(apps, core, production):
    from kubernetes import client as k8s

    def check() -> bool:
        try:
            ready = [apps.read_namespaced_deployment(f"{s}-green", production).status
                     .ready_replicas or 0 for s in KILLED]
        except k8s.ApiException:
            return False  # not cloned yet
        return (all(n >= 1 for n in ready)
                and set(h.selectors(core, production).values()) == {"blue"})
    return check


def _both_switched(core, production):
    return lambda: all(h.selected(core, production, s) == "green" for s in KILLED)


def _second_commit_hanging(apps):
    """The commit clears each Service's pending marks (one patch each, after the two
    switches): the second one hangs (never carried out), so the release is killed between."""
    h.api_faults(apps, "POST", {"verb": "patch", "resource": "services", "error_rate": 1.0,
                                "hang_ms": 60_000, "skip": len(KILLED) + 1, "times": 1})
    return lambda: h.api_faults(apps, "GET")[0]["hits"] >= 1


def _in_keep_window(core, production):
    from kubernetes import client as k8s

    from tasks.release.leases import LEASE_NAME
    from tasks.release.preemption import KEEP_WINDOW, PHASE_ANNOTATION

    coordination = k8s.CoordinationV1Api(core.api_client)

    def check() -> bool:
        try:
            lease = coordination.read_namespaced_lease(LEASE_NAME, production)
        except k8s.ApiException:
            return False
        return (lease.metadata.annotations or {}).get(PHASE_ANNOTATION) == KEEP_WINDOW
    return check


def _one_version_after_reconcile(apps, core, catalogue, production) -> set[str]:
    """What every recovery starts with (a rerun, a rollback, the crash hook): reconcile.
    Returns the images the Services select afterwards."""
    from tasks.release.catalogue import load_catalogue
    from tasks.release.reconcile import reconcile_environment

    loaded = load_catalogue(str(catalogue))
    reconcile_environment(apps, core, loaded.environment("production"), loaded.select())
    selected = h.selectors(core, production)
    return {apps.read_namespaced_deployment(f"{s}-{selected[s]}", production)
            .spec.template.spec.containers[0].image.rsplit(":", 1)[1] for s in KILLED}


@pytest.mark.parametrize("step", ["after-clone", "after-second-switch", "mid-commit",
                                  "keep-window"])
def test_sigkill_at_a_step_then_one_rollback_is_consistent(
        prefect_harness, sandbox_stack, sandbox_seed, tmp_path, step):
    """The fault matrix's SIGKILL rows, a release of two services (no staging) killed: new
    colours up but not switched; both switched (the second in verification); midway through
    the commit (the first Service's switch committed, the second's not); committed, in the
    keep-old-colour window. One rollback brings every Service back on the last committed
    release (1.0.0), on ready pods; the killed run's record says crashed, and whether it had
    committed. Midway through the commit, reconcile alone (where every recovery starts)
    already leaves one version, never a mix."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.rollback import rollback
    from tasks.release.history import release_history

    production = sandbox_seed(staging=False)[1]
    apps, core = h.apis(sandbox_stack)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns="unused", staging=False,
                                  production_ns=production, blocks=blocks, intervals=2,
                                  keep_old_colour_s=600, lock_ttl_s=900, lock_wait_s=0)
    seed_record(core, production, "1.0.0", "0.9.0")
    h.push_all(sandbox_stack, "5.0.0")
    when = {"after-clone": lambda: _green_up_blue_serving(apps, core, production),
            "after-second-switch": lambda: _both_switched(core, production),
            "mid-commit": lambda: _second_commit_hanging(apps),
            "keep-window": lambda: _in_keep_window(core, production)}[step]()
    try:
        h.release_killed_when(when, what=step, catalogue=catalogue, version="5.0.0",
                              workdir=tmp_path, services=KILLED)
    finally:
        h.api_faults(apps, "DELETE")
    committed = step in ("mid-commit", "keep-window")
    if step in ("after-second-switch", "keep-window"):
        assert {h.selected(core, production, s) for s in KILLED} == {"green"}
    if step == "mid-commit":
        assert _one_version_after_reconcile(apps, core, catalogue, production) == {"5.0.0"}
    killed = next(r for r in release_history(core, production) if r.version == "5.0.0")
    with get_client(sync_client=True) as client:  # what the zombie automation does
        client.set_flow_run_state(killed.flow_run_id, Crashed(message="no heartbeat"),
                                  force=True)

    summary = rollback(environment="production", catalogue_path=str(catalogue))

    assert summary.outcome == "succeeded"
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    blue = h.images(apps, production, "blue")
    assert {n: i for n, (i, _) in blue.items()} == {
        n: f"{repo}:1.0.0" for n, (repo, _, _) in h.SERVICES.items()}
    assert all(n >= 1 for _, n in blue.values())
    history = release_history(core, production)
    record = next(r for r in history if r.id == killed.id)
    assert record.outcome == "crashed"
    # the record tells whether the killed release had committed (its colours went live)
    assert record.colours == ({s: "green" for s in KILLED} if committed else {})
    # not committed: back to the last committed (1.0.0); committed: to what ran before it
    # (the same 1.0.0 images, checked above)
    assert (history[-1].kind, history[-1].outcome) == ("rollback", "succeeded")
    assert history[-1].version == ("before 5.0.0" if committed else "1.0.0")


def test_an_interrupted_release_runs_its_crash_hook_before_it_exits(
        prefect_harness, sandbox_stack, sandbox_seed, tmp_path):
    """A process that can still run hooks (a SIGTERM not sent by a Prefect runner, e.g. the
    node shutting down; SIGINT counts as a cancel) ends the run Crashed
    and its on_crashed hook cleans up at once, no rerun or rollback needed: the uncommitted
    switches go back, the record says crashed, the Lease is given back."""
    import signal

    from kubernetes import client as k8s
    from prefect.client.orchestration import get_client

    from tasks.release.history import release_history
    from tasks.release.leases import LEASE_NAME

    production = sandbox_seed(staging=False)[1]
    _, core = h.apis(sandbox_stack)
    blocks = h.register_blocks(sandbox_stack)
    catalogue = h.write_catalogue(tmp_path / "c.yaml", staging_ns="unused", staging=False,
                                  production_ns=production, blocks=blocks, intervals=600,
                                  lock_ttl_s=900, lock_wait_s=0)  # verifies until interrupted
    h.push_all(sandbox_stack, "5.1.0")
    first_switched = lambda: h.selected(core, production, KILLED[0]) == "green"  # noqa: E731
    status = h.release_killed_when(first_switched, what="the first switch",
                                   catalogue=catalogue, version="5.1.0", workdir=tmp_path,
                                   services=KILLED, signum=signal.SIGTERM)

    assert status != 0
    assert h.selectors(core, production) == {s: "blue" for s in h.ORDER}
    record = next(r for r in release_history(core, production) if r.version == "5.1.0")
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(record.flow_run_id).state
    assert record.outcome == "crashed" and record.colours == {}
    assert state.type.value == "CRASHED"
    with pytest.raises(k8s.ApiException) as gone:
        k8s.CoordinationV1Api(core.api_client).read_namespaced_lease(LEASE_NAME, production)
    assert gone.value.status == 404
