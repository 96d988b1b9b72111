"""What a pass does when the API server answers a call with an error, and what it reads from pods.

kmock validates nothing and has no quota, so here the API server's answers are stand-ins: the
kubernetes client's own ApiException with the Status body the API server sends (its `message`), raised
by a stand-in client. Everything else (reconcile, kube's error handling, the builders) is the real code.
The whole operator against the emulator, with the same faults, is tests/test_operator_faults.py.
"""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from builders import job, pnaseval
from pnas_operator import kube, reconcile
from pnas_operator.settings import OperatorSettings

WHEN = "2026-11-30T00:10:00Z"
# the message kube-apiserver's ResourceQuota admission returns (plugin/pkg/admission/resourcequota)
QUOTA = 'jobs.batch "eval-convert" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10'


def api_error(status: int, message: str) -> ApiException:
    error = ApiException(status=status, reason="Error")
    error.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": status}
    )
    return error


class StandInApi:
    """Answers Job creations with `status`; a 409 finds `existing` under that name."""

    def __init__(self, status: int, message: str = "", existing: dict | None = None):
        self.status, self.message, self.existing, self.created = status, message, existing, []

    def create_namespaced_job(self, namespace, manifest, **_):
        self.created.append(manifest["metadata"]["name"])
        if self.status != 201:
            raise api_error(self.status, self.message)

    def read_namespaced_job(self, name, namespace, **_):
        return self.existing

    def list_namespaced_event(self, namespace, field_selector, **_):
        return type("EventList", (), {"items": []})()


@pytest.fixture
def stand_in(monkeypatch):
    def install(*args, **kwargs):
        api = StandInApi(*args, **kwargs)
        client = type("ApiClient", (), {"sanitize_for_serialization": staticmethod(lambda obj: obj)})()
        monkeypatch.setattr(kube, "_clients", lambda: (api, api, api, client))
        return api

    return install


def body() -> dict:
    data = pnaseval()
    data["metadata"].update(uid="u-1", generation=1)
    return data


def preflight_done() -> dict:
    """The run's first Job (its preflight), finished: the passes below create convert and shard."""
    done = job("eval", "preflight", complete=True, succeeded=1)
    done["metadata"].update(namespace="ml", ownerReferences=[{"kind": "PnasEval", "uid": "u-1"}])
    return done


def run(jobs=None, pods=()) -> reconcile.Result:
    jobs = [preflight_done()] if jobs is None else jobs
    return reconcile.reconcile(body(), OperatorSettings(), list(jobs), list(pods), when=WHEN)


def test_the_first_job_is_the_preflight(stand_in):
    api = stand_in(201)
    assert run(jobs=[]).outcome.status.phase == "Pending" and api.created == ["eval-preflight"]


def test_a_job_the_api_server_refuses_fails_the_run_and_says_why(stand_in):
    api = stand_in(422, "spec.template.spec.tolerations[0].operator: Unsupported value")
    result = run()
    status = result.outcome.status.dump()
    assert status["phase"] == "Failed" and api.created == ["eval-convert"]  # no more tries after a refusal
    assert (
        "refused Job eval-convert (convert): HTTP 422: spec.template.spec.tolerations[0].operator" in status["message"]
    )
    assert status["conditions"][0]["reason"] == "JobRejected" and result.outcome.events[0][:2] == (
        "Warning",
        "JobRejected",
    )


def test_created_is_progress(stand_in):
    api = stand_in(201)
    result = run()
    assert (
        result.outcome.status.phase == "Converting"
        and api.created == ["eval-convert", "eval-shard"]
        and result.blocked is None
    )


def test_a_job_of_ours_that_exists_is_progress(stand_in):
    api = stand_in(409, "exists", existing={"metadata": {"name": "eval-convert", "ownerReferences": [{"uid": "u-1"}]}})
    assert run().blocked is None and api.created == ["eval-convert", "eval-shard"]


@pytest.mark.parametrize(
    "status, message, reason",
    [
        (500, "etcdserver: mvcc: database space exceeded", "ApiError"),
        (403, QUOTA, "QuotaExceeded"),
        (429, "too many requests", "ApiError"),
    ],
)
def test_errors_that_may_pass_block_the_pass_and_say_why(stand_in, status, message, reason):
    api = stand_in(status, message)
    result = run()
    assert result.blocked == (reason, f"creating Job eval-convert: HTTP {status}: {message}")
    assert result.outcome.status.phase == "Converting" and api.created == [
        "eval-convert"
    ]  # the rest waits for the retry


def test_a_leftover_job_of_an_earlier_pnaseval_is_reported_then_fails_the_run_after_the_deadline(stand_in):
    stand_in(
        409,
        "exists",
        existing={"metadata": {"name": "eval-convert", "ownerReferences": [{"kind": "PnasEval", "uid": "old"}]}},
    )
    result = run()
    reason, message = result.blocked
    assert reason == "LeftoverJob" and "Job eval-convert (convert) exists but belongs to an earlier PnasEval" in message
    assert "uid old" in message and "kubectl delete job -n ml eval-convert" in message
    # blocked since long before the deadline (900 s by default): the run fails, naming the Job
    old = body()
    old["status"] = {
        "conditions": [
            {
                "type": "Blocked",
                "status": "True",
                "reason": "LeftoverJob",
                "message": message,
                "lastTransitionTime": "2026-11-29T23:50:00Z",
            }
        ]
    }
    failed = reconcile.reconcile(old, OperatorSettings(), [preflight_done()], [], when=WHEN).outcome.status
    assert failed.phase == "Failed" and "blocked for more than 900 s: Job eval-convert" in failed.message


def test_a_cleanup_job_is_named_after_the_pnaseval_uid(stand_in):
    api = stand_in(201)
    data = body()
    data["spec"]["cleanup"] = True
    type_, message = reconcile.cleanup(data, OperatorSettings())
    assert type_ == "Normal" and api.created == ["eval-cleanup-u-1"] and "started Job eval-cleanup-u-1" in message


def test_a_refused_cleanup_job_raises_for_the_handler_to_report(stand_in):
    stand_in(403, 'jobs.batch "eval-cleanup-u-1" is forbidden: violates PodSecurity')
    with pytest.raises(kube.ApiError) as caught:
        reconcile.cleanup(body(), OperatorSettings())
    assert caught.value.status == 403 and caught.value.reason == "Forbidden"
