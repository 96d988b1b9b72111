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
    return [
        i for i in found if (i["metadata"].get("labels") or {}).get(NAME_LABEL) == owner
    ]  # not every server filters


def list_jobs(namespace: str, owner: str) -> list[dict]:
    """The Jobs labelled for one PnasEval (the safety-net pass; the watch feeds the others)."""
    batch, _, _, _ = _clients()
    found = _call(
        "listing Jobs", "list", "jobs", batch.list_namespaced_job, namespace, label_selector=f"{NAME_LABEL}={owner}"
    )
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
    found = _call(
        f"reading Events of Job {job}", "list", "events", core.list_namespaced_event, namespace, field_selector=selector
    )
    events = sorted(
        found.items, key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or "")
    )
    return [e.message or "" for e in events]


def patch_status(namespace: str, name: str, status: dict) -> None:
    """Write a PnasEval's status (a merge patch of the status subresource)."""
    _, _, custom, _ = _clients()
    _call(
        f"writing the status of {name}",
        "patch",
        "pnasevals/status",
        custom.patch_namespaced_custom_object_status,
        API_GROUP,
        API_VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status},
    )


# ---- read-only views for `pnas-eval doctor` (never a Secret's values: only its key names) ----

KUEUE_GROUP, KUEUE_VERSIONS = "kueue.x-k8s.io", ("v1beta2", "v1beta1")  # v1beta2 from Kueue 0.15, v1beta1 up to 0.14
VOLCANO_GROUP, VOLCANO_VERSION = "scheduling.volcano.sh", "v1beta1"  # Volcano's PodGroup kind
# mind-cluster's build/ascendplugin*.yaml: DaemonSets named ascend-device-plugin*, pods labelled name=ascend-device-plugin-ds
DEVICE_PLUGIN_NAME, DEVICE_PLUGIN_POD_LABEL = "ascend-device-plugin", ("name", "ascend-device-plugin-ds")


@cache
def _readers():
    from kubernetes import client

    *_, api = _clients()
    return client.AppsV1Api(api), client.ApiextensionsV1Api(api)


def _plain(item) -> dict:
    *_, api = _clients()
    return api.sanitize_for_serialization(item)


def _read(snapshot, what: str, resource: str, fn, *args, **kwargs):
    """A read for the doctor: None when it does not exist (404) or may not be read (403, noted in
    `snapshot.forbidden`); any other failure is raised (the API server could not be asked)."""
    try:
        return _call(what, "get", resource, fn, *args, **kwargs)
    except ApiError as error:
        if error.status == 403:
            snapshot.forbidden.add(resource)
        elif error.status != 404:
            raise
    return None


def cluster_snapshot(namespace: str, secret: str, crd_name: str, operator_labels: dict[str, str]):
    """What `pnas-eval doctor` judges, read from the cluster (cluster_checks.ClusterSnapshot).
    ApiError when the API server does not answer or refuses the caller altogether (401)."""
    from pnas_operator.cluster_checks import ClusterSnapshot

    try:
        _, core, custom, _ = _clients()
        apps, extensions = _readers()
    except Exception as error:  # no kubeconfig and no in-cluster account: nothing to ask
        raise ApiError("loading the kubeconfig", 0, clip(str(error), 200)) from None
    s = ClusterSnapshot()
    found = _read(s, f"reading Namespace {namespace}", "namespaces", core.read_namespace, namespace)
    s.namespace = _plain(found) if found else None
    found = _read(
        s, f"reading CRD {crd_name}", "customresourcedefinitions", extensions.read_custom_resource_definition, crd_name
    )
    s.crd = _plain(found) if found else None
    selector = ",".join(f"{k}={v}" for k, v in operator_labels.items())
    found = _read(
        s,
        "listing operator Deployments",
        "deployments",
        apps.list_deployment_for_all_namespaces,
        label_selector=selector,
    )
    s.operators = [
        d
        for d in map(_plain, found.items if found else [])
        if operator_labels.items() <= (d["metadata"].get("labels") or {}).items()
    ]
    found = _read(s, f"reading Secret {secret}", "secrets", core.read_namespaced_secret, secret, namespace)
    s.secret_keys = set(found.data or {}) if found else None  # the key names only
    found = _read(s, "listing ServiceAccounts", "serviceaccounts", core.list_namespaced_service_account, namespace)
    s.service_accounts = {a.metadata.name for a in found.items} if found else set()
    found = _read(s, "listing Nodes", "nodes", core.list_node)
    s.nodes = [_plain(n) for n in found.items] if found else []
    s.local_queues = _local_queues(s, custom, namespace)
    s.volcano = (
        _read(
            s,
            "looking for Volcano",
            "podgroups",
            custom.list_namespaced_custom_object,
            VOLCANO_GROUP,
            VOLCANO_VERSION,
            namespace,
            "podgroups",
            limit=1,
        )
        is not None
    )
    found = _read(s, "listing DaemonSets", "daemonsets", apps.list_daemon_set_for_all_namespaces)
    s.device_plugins = [d for d in map(_plain, found.items if found else []) if _is_device_plugin(d)]
    return s


def _local_queues(snapshot, custom, namespace: str) -> set[str] | None:
    """Names of Kueue's LocalQueues in the namespace; None when no Kueue version serves the kind."""
    for version in KUEUE_VERSIONS:
        found = _read(
            snapshot,
            "listing Kueue LocalQueues",
            "localqueues",
            custom.list_namespaced_custom_object,
            KUEUE_GROUP,
            version,
            namespace,
            "localqueues",
        )
        if found is not None:
            return {q["metadata"]["name"] for q in found.get("items", [])}
        if "localqueues" in snapshot.forbidden:
            return None
    return None


def _is_device_plugin(daemonset: dict) -> bool:
    labels = ((daemonset.get("spec") or {}).get("template", {}).get("metadata") or {}).get("labels") or {}
    key, value = DEVICE_PLUGIN_POD_LABEL
    return daemonset["metadata"]["name"].startswith(DEVICE_PLUGIN_NAME) or labels.get(key) == value
