"""What a pass does when the API server answers a Job creation with an error.

kmock validates nothing, so here the API server's answers are stand-ins: the kubernetes client's
own ApiException, raised by a stand-in BatchV1Api. Everything else (reconcile, kube, the builders)
is the real code.
"""
from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from builders import pnaseval
from pnas_operator import kube, reconcile
from pnas_operator.settings import OperatorSettings


class StandInBatchApi:
    """Answers every Job creation with `status` (and the API server's Status body)."""

    def __init__(self, status: int):
        self.status, self.created = status, []

    def list_namespaced_job(self, namespace, label_selector):
        return type("JobList", (), {"items": []})()

    def create_namespaced_job(self, namespace, manifest):
        self.created.append(manifest["metadata"]["name"])
        if self.status != 201:
            error = ApiException(status=self.status, reason="Unprocessable Entity")
            error.body = json.dumps({"kind": "Status", "message": "spec.template.spec.tolerations[0].operator: Unsupported value"})
            raise error


@pytest.fixture
def api(monkeypatch, request):
    batch = StandInBatchApi(request.param)
    fake_client = type("ApiClient", (), {"sanitize_for_serialization": staticmethod(lambda obj: obj)})()
    monkeypatch.setattr(kube, "_clients", lambda: (batch, None, fake_client))
    return batch


def body() -> dict:
    data = pnaseval()
    data["metadata"].update(uid="u-1", generation=1)
    return data


@pytest.mark.parametrize("api", [422], indirect=True)
def test_a_job_the_api_server_refuses_fails_the_run_and_says_why(api):
    outcome = reconcile.reconcile(body(), OperatorSettings(), when="2026-11-30T00:00:00Z")
    status = outcome.status.dump()
    assert status["phase"] == "Failed" and api.created == ["eval-convert"]  # no more tries after a refusal
    assert "refused Job eval-convert (convert): HTTP 422: spec.template.spec.tolerations[0].operator" in status["message"]
    assert status["conditions"][0]["reason"] == "JobRejected" and outcome.events[0][:2] == ("Warning", "JobRejected")


@pytest.mark.parametrize("api", [201, 409], indirect=True)
def test_created_or_already_there_is_progress(api):
    outcome = reconcile.reconcile(body(), OperatorSettings(), when="2026-11-30T00:00:00Z")
    assert outcome.status.phase == "Pending" and api.created == ["eval-convert", "eval-shard"]


@pytest.mark.parametrize("api", [500, 403], indirect=True)
def test_errors_that_may_pass_are_left_to_kopf_retries(api):
    with pytest.raises(ApiException):
        reconcile.reconcile(body(), OperatorSettings())
