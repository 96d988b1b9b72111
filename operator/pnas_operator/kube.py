"""The one door to the Kubernetes API (besides kopf's own watching and patching of PnasEvals).

Every call has a timeout (the kubernetes client has none by default: a call that hangs would hold its
thread forever), is timed for the metrics, and fails as an `ApiError` that says what was refused and
why in a few words (the API server's Status message, never a response body in full). Creating a Job
that exists is not an error: the caller gets the existing Job to check whose it is.
"""
from __future__ import annotations

import json
import logging
from functools import cache

from pnas_jobs.spec import API_GROUP, API_VERSION, PLURAL
from pnas_jobs.status import Reason, clip
from pnas_operator import metrics
from pnas_operator.manifests import NAME_LABEL

log = logging.getLogger(__name__)
TIMEOUTS = {"connect": 5.0, "read": 30.0}  # seconds; configure() sets them from the operator's settings


def configure(connect: float, read: float) -> None:
    TIMEOUTS.update(connect=connect, read=read)


class ApiError(Exception):
    """A call that failed: `status` is the HTTP code (0: no answer, e.g. a timeout)."""

    def __init__(self, what: str, status: int, message: str):
        self.what, self.status, self.message = what, status, clip(message, 300)
        super().__init__(f"{what}: {self.describe()}")

    def describe(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message

    @property
    def reason(self) -> str:
        if self.status == 403:
            return Reason.QUOTA_EXCEEDED if "exceeded quota" in self.message else Reason.FORBIDDEN
        return Reason.API_ERROR


class JobRejected(ApiError):
    """The API server refused a Job as invalid (400/422): retrying the same manifest cannot help."""


@cache
def _clients():
    from kubernetes import client, config

    class TimedApiClient(client.ApiClient):
        def call_api(self, *args, **kwargs):
            if kwargs.get("_request_timeout") is None:
                kwargs["_request_timeout"] = (TIMEOUTS["connect"], TIMEOUTS["read"])
            return super().call_api(*args, **kwargs)

    try:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    except config.ConfigException:
        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
    configuration.retries = False  # one attempt per call: the caller retries with backoff, and sees each failure
    api = TimedApiClient(configuration)
    api.user_agent = "pnas-operator"  # how the API server's audit log and metrics name this client
    return client.BatchV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api), api


def _call(what: str, verb: str, resource: str, fn, *args, **kwargs):
    """Run one client call; any failure becomes an ApiError naming `what`."""
    from kubernetes.client.exceptions import ApiException

    try:
        with metrics.api_call(verb, resource):
            return fn(*args, **kwargs)
    except ApiException as error:
        raise ApiError(what, error.status or 0, _reason(error)) from None
    except Exception as error:  # urllib3 timeouts and connection errors: no answer at all
        raise ApiError(what, 0, f"no answer from the API server ({type(error).__name__})") from None


def _reason(error) -> str:
    """The API server's own message (a Status object), else its reason phrase."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


def _owned(items, owner: str) -> list[dict]:
    _, _, _, api = _clients()
    found = [api.sanitize_for_serialization(i) for i in items]
    return [i for i in found if (i["metadata"].get("labels") or {}).get(NAME_LABEL) == owner]  # not every server filters


def list_jobs(namespace: str, owner: str) -> list[dict]:
    """The Jobs labelled for one PnasEval (the safety-net pass; the watch feeds the others)."""
    batch, _, _, _ = _clients()
    found = _call("listing Jobs", "list", "jobs", batch.list_namespaced_job, namespace, label_selector=f"{NAME_LABEL}={owner}")
    return _owned(found.items, owner)


def create_job(job: dict) -> dict | None:
    """Create a Job: None when created, else the Job of that name that already exists."""
    batch, _, _, api = _clients()
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    try:
        _call(f"creating Job {name}", "create", "jobs", batch.create_namespaced_job, namespace, job)
        return None
    except ApiError as error:
        if error.status in (400, 422):
            raise JobRejected(error.what, error.status, error.message) from None
        if error.status != 409:
            raise
    existing = _call(f"reading Job {name}", "get", "jobs", batch.read_namespaced_job, name, namespace)
    return api.sanitize_for_serialization(existing)


def failed_create_events(namespace: str, job: str) -> list[str]:
    """Messages of the Job controller's FailedCreate Events on a Job (pods refused at admission), oldest first."""
    _, core, _, _ = _clients()
    selector = f"involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"
    found = _call(f"reading Events of Job {job}", "list", "events", core.list_namespaced_event, namespace, field_selector=selector)
    events = sorted(found.items, key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
    return [e.message or "" for e in events]


def patch_status(namespace: str, name: str, status: dict) -> None:
    """Write a PnasEval's status (a merge patch of the status subresource)."""
    _, _, custom, _ = _clients()
    _call(
        f"writing the status of {name}", "patch", "pnasevals/status",
        custom.patch_namespaced_custom_object_status, API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status},
    )  # fmt: skip
