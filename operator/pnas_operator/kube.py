"""The one door to the Kubernetes API (besides kopf's own watching and patching of PnasEvals).

Idempotent where it can be: creating a Job that exists is success, so a restarted operator or a
repeated pass never duplicates work.
"""
from __future__ import annotations

import json
import logging
from functools import cache

from pnas_operator.manifests import NAME_LABEL

log = logging.getLogger(__name__)


@cache
def _clients():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiClient()
    return client.BatchV1Api(api), client.CoreV1Api(api), api


def list_jobs(namespace: str, owner: str) -> list[dict]:
    """The Jobs of one PnasEval, as plain dicts (label filtered here too: not every API server does)."""
    batch, _, api = _clients()
    found = batch.list_namespaced_job(namespace, label_selector=f"{NAME_LABEL}={owner}")
    jobs = [api.sanitize_for_serialization(j) for j in found.items]
    return [j for j in jobs if (j["metadata"].get("labels") or {}).get(NAME_LABEL) == owner]


class JobRejected(Exception):
    """The API server refused a Job as invalid or forbidden: retrying the same manifest cannot help."""


def create_job(job: dict) -> bool:
    """Create a Job; False when it already exists (another pass or operator got there first)."""
    from kubernetes.client.exceptions import ApiException

    batch, _, _ = _clients()
    try:
        batch.create_namespaced_job(job["metadata"]["namespace"], job)
        return True
    except ApiException as error:
        if error.status == 409:
            return False
        # invalid: no retry can help. Others (403 quota, 429, 5xx) pass up: kopf retries the pass
        if error.status in (400, 422):
            raise JobRejected(f"HTTP {error.status}: {_reason(error)}") from None
        raise


def _reason(error) -> str:
    """The API server's own message (a Status object), else its reason phrase."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


def termination_message(namespace: str, job: str) -> str | None:
    """The message a Job's succeeded pod left in its termination log (the aggregate's summary)."""
    _, core, api = _clients()
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
    for pod in map(api.sanitize_for_serialization, pods.items):
        if (pod["metadata"].get("labels") or {}).get("job-name") != job:
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") == 0 and terminated.get("message"):
                return terminated["message"]
    return None

