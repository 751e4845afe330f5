"""kubectl rollout-status semantics (the one readiness judgment), and pod failure reasons."""

from __future__ import annotations

from kubernetes import client as k8s

from tasks.release.rollout import pod_problems, rollout_status


def deployment(*, generation=2, observed=2, spec_replicas=2, replicas=2, updated=2,
               available=2, conditions=None) -> k8s.V1Deployment:
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="web", generation=generation),
        spec=k8s.V1DeploymentSpec(
            replicas=spec_replicas,
            selector=k8s.V1LabelSelector(match_labels={"app": "web"}),
            template=k8s.V1PodTemplateSpec(),
        ),
        status=k8s.V1DeploymentStatus(
            observed_generation=observed, replicas=replicas, updated_replicas=updated,
            available_replicas=available, conditions=conditions,
        ),
    )


def test_done_when_every_replica_updated_and_available():
    status = rollout_status(deployment())
    assert status.done and not status.failed
    assert "successfully rolled out" in status.message


def test_waits_until_spec_update_observed():
    status = rollout_status(deployment(generation=3, observed=2))
    assert not status.done and not status.failed
    assert "spec update to be observed" in status.message


def test_progress_deadline_exceeded_is_failure():
    cond = k8s.V1DeploymentCondition(type="Progressing", status="False",
                                     reason="ProgressDeadlineExceeded")
    status = rollout_status(deployment(updated=1, conditions=[cond]))
    assert status.failed and not status.done
    assert "exceeded its progress deadline" in status.message


def test_deadline_ignored_until_generation_observed():
    cond = k8s.V1DeploymentCondition(type="Progressing", status="False",
                                     reason="ProgressDeadlineExceeded")
    status = rollout_status(deployment(generation=5, observed=4, conditions=[cond]))
    assert not status.failed


def test_new_replicas_not_all_updated():
    status = rollout_status(deployment(updated=1, replicas=3, available=2))
    assert not status.done
    assert "1 out of 2 new replicas have been updated" in status.message


def test_old_replicas_pending_termination():
    status = rollout_status(deployment(replicas=3, updated=2, available=2))
    assert not status.done
    assert "1 old replicas are pending termination" in status.message


def test_updated_replicas_not_available():
    status = rollout_status(deployment(available=1))
    assert not status.done
    assert "1 of 2 updated replicas are available" in status.message


def test_missing_status_fields_count_as_zero():
    dep = deployment()
    dep.status = None
    dep.metadata = k8s.V1ObjectMeta(name="web")
    status = rollout_status(dep)
    assert not status.done
    assert "0 out of 2" in status.message


def pod(name, *, waiting=None, ready=False, phase="Running", terminated=None) -> k8s.V1Pod:
    state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason=waiting) if waiting else None,
        terminated=k8s.V1ContainerStateTerminated(exit_code=1, reason=terminated)
        if terminated else None,
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        status=k8s.V1PodStatus(
            phase=phase,
            container_statuses=[k8s.V1ContainerStatus(
                name="web", ready=ready, restart_count=0, image="x", image_id="",
                state=state,
            )],
        ),
    )


def test_pod_problems_name_the_kubelet_reasons():
    problems = pod_problems([
        pod("a", waiting="ImagePullBackOff", phase="Pending"),
        pod("b", waiting="CrashLoopBackOff"),
        pod("c"),
        pod("d", ready=True),
        pod("e", terminated="Error"),
    ])
    assert problems[0] == "pod a: container web ImagePullBackOff"
    assert problems[1] == "pod b: container web CrashLoopBackOff"
    assert problems[2] == "pod c: container web not ready"
    assert "terminated" in problems[3] and problems[3].startswith("pod e")
    assert len(problems) == 4
