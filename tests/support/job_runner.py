"""The test side of a cluster: the Job controller, the kubelet (and Kueue) that kmock does not have.

It watches the Jobs in a namespace of the emulator and, for each index, runs the container's
command on this machine with the container's environment (secretKeyRef resolved from the Secrets
in the emulator, `JOB_COMPLETION_INDEX` set), then writes the Job's status as the Job controller
would: counters, completedIndexes, failedIndexes, startTime, completionTime and the Complete/Failed
condition. It honours `backoffLimitPerIndex`, `backoffLimit` and the pod failure policy's exit-code
rule (job_controller.py decides, as Kubernetes' Job controller does). Each pod is a Pod object, as
the Job controller and the kubelet make it (kubernetes.io/docs/concepts/workloads/controllers/job/):
labelled with the template's labels plus `batch.kubernetes.io/job-name`, `job-name`,
`batch.kubernetes.io/controller-uid`, `controller-uid` and `batch.kubernetes.io/job-completion-index`,
Running while its command runs, then terminated with its exit code and termination message (what the
aggregate leaves in /dev/termination-log).

Pods that cannot start are reported as Kubernetes reports them (pnas_operator/starting.py cites
where each comes from):
- `unschedulable[job] = message`: the scheduler cannot place the pods: Pending, condition
  `PodScheduled=False, reason Unschedulable` with that message, until the entry is removed;
- `image_pull.add(job)`: the kubelet cannot pull the image: the container waits with reason
  `ErrImagePull`, then `ImagePullBackOff`, until removed;
- a Secret named by a secretKeyRef that does not exist: the container waits with reason
  `CreateContainerConfigError`, message `secret "<name>" not found`, until the Secret exists;
- a ServiceAccount that does not exist: admission refuses the pod, so there is no pod; the Job
  controller records a Warning Event `FailedCreate` on the Job ("Error creating: pods "<job>-<i>-" is
  forbidden: error looking up service account <ns>/<sa>: serviceaccount "<sa>" not found") and
  retries until the account exists;
- `kueue.add(job)`: Kueue's webhook holds the Job: `spec.suspend: true`, condition `Suspended=True`
  (reason JobSuspended) and no pods until `admit(job)` sets `spec.suspend: false` (the Job controller
  then sets `Suspended=False`, reason JobResumed, and starts the pods).

Other faults per (Job name, index): `fail[(job, index)] = n` makes the first n pods of that index
fail (exit 1, as a crashed node would) before the real command runs; `hold` keeps a Job's pods from
starting until `release(job)`. With `execute=False` no command runs: every pod succeeds after
`pod_seconds`, and
the pod of a Job whose command is `pnas-eval aggregate` leaves `summary(job)` as its termination
message (for tests of the operator's reactions, which need no real stage).

Ascend NPUs: a container that asks for `huawei.com/Ascend*` gets the physical ids in `npus`, as the
Ascend device plugin's Allocate sets them (ASCEND_VISIBLE_DEVICES, comma-separated ints:
mind-cluster ascend-device-plugin pkg/common/common.go SetAscendRuntimeEnv); the kubelet puts the
device plugin's variables before the container's own env, and a later one wins. A pod with
`schedulerName: volcano` gets the annotation Volcano's Ascend plugin writes at binding,
`huawei.com/Ascend310P: Ascend310P-3` (ascend-for-volcano internal/npu/base/task.go
SetNPUTopologyToPodFn), which a downward-API fieldRef then reads.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import kubernetes
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from support import job_controller

TERMINATION_LOG = "/dev/termination-log"
USER_AGENT = "test-kubelet"  # what the emulator's request log shows for this side


def stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobRunner:
    def __init__(
        self,
        api_client,
        namespace: str,
        base_env: dict[str, str],
        workers: int = 3,
        execute: bool = True,
        summary: Callable[[dict], str] | None = None,
        poll: float = 0.2,
        pod_seconds: float = 0.0,
    ):
        api_client.user_agent = USER_AGENT
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace, self.base_env = namespace, base_env
        self.execute, self.summary, self.poll, self.pod_seconds = execute, summary, poll, pod_seconds
        self.completed: dict[str, float] = {}  # job name -> when (monotonic) its Complete condition was written
        self.slow: dict[str, float] = {}  # job name -> seconds its pods run (execute=False), instead of pod_seconds
        self.fail: dict[tuple[str, int], int] = {}
        self.hold: set[str] = set()  # Jobs whose pods wait until released
        self.unschedulable: dict[str, str] = {}
        self.image_pull: set[str] = set()
        self.kueue: set[str] = set()
        self.started: dict[str, str] = {}  # job name -> uid when first seen
        self.pods: list[tuple[str, int, int]] = []  # (job, index, exit code) of every pod run
        self.npus: list[int] = [3]  # physical NPU ids the device plugin hands out on this "node"
        self.environments: list[dict[str, str]] = []  # the environment of every pod run
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(workers)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
        self.errors: list[BaseException] = []

    def start(self) -> "JobRunner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def release(self, job: str) -> None:
        self.hold.discard(job)

    def admit(self, job: str) -> None:
        """Kueue admits the Job: it clears spec.suspend (the Job controller then resumes it)."""
        self.batch.patch_namespaced_job(job, self.namespace, {"spec": {"suspend": False}})
        self.kueue.discard(job)

    def _loop(self) -> None:
        """Learn about Jobs from a watch, as the Job controller does (its informer)."""
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.batch.list_namespaced_job, self.namespace, timeout_seconds=2, _request_timeout=10
                ):
                    job = event["raw_object"]
                    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
                    if (
                        event["type"] != "DELETED" and self.started.get(name) != uid
                    ):  # new, or re-created under that name
                        self.started[name] = uid
                        threading.Thread(target=self._run_job, args=(name,), daemon=True).start()
                    if self._stop.is_set():
                        break
            except Exception as error:  # keep serving; the test sees it in .errors
                self.errors.append(error)
                self._stop.wait(self.poll)
            finally:
                stream.stop()

    def _run_job(self, name: str) -> None:
        try:
            self._run_job_inner(name)
        except BaseException as error:
            self.errors.append(error)

    def _wait(self, blocked: Callable[[], bool]) -> bool:
        """Wait while `blocked()`; False when the runner stops first."""
        while blocked() and not self._stop.is_set():
            time.sleep(0.1)
        return not self._stop.is_set()

    def _run_job_inner(self, name: str) -> None:
        api = self.batch.api_client
        job = api.sanitize_for_serialization(self.batch.read_namespaced_job(name, self.namespace))
        if name in self.kueue and not self._queue(name):
            return
        spec = job["spec"]
        if not self._wait(lambda: name in self.hold) or not self._admitted(job):
            return
        container = spec["template"]["spec"]["containers"][0]
        placed = placed_metadata(spec["template"], self.npus)  # what the scheduler leaves on each pod
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions", 1)
        rules = job_controller.rules_of(job)  # what Kubernetes decides about a failed pod
        state = {"succeeded": set(), "failed": set(), "failed_pods": 0, "active": 0, "startTime": stamp()}
        self._write(name, state, indexed, None)

        def run_index(index: int) -> None:
            attempt, failures = 0, 0
            while True:
                with self._lock:
                    state["active"] += 1
                self._write(name, state, indexed, None)
                code = self._run_pod(job, container, index if indexed else None, attempt, placed)
                attempt += 1
                outcome = job_controller.pod_outcome(rules, code, failures)
                with self._lock:
                    state["active"] -= 1
                    if outcome == job_controller.SUCCEEDED:
                        state["succeeded"].add(index)
                    else:
                        state["failed_pods"] += 1
                        failures += 1
                        if outcome != job_controller.RETRY:
                            state["failed"].add(index)
                self._write(name, state, indexed, None)
                if outcome != job_controller.RETRY:
                    break

        list(self._pool.map(run_index, range(completions)))
        if self._stop.is_set():
            return
        if state["failed"]:
            self._write(name, state, indexed, ("Failed", "FailedIndexes" if indexed else "BackoffLimitExceeded"))
        else:
            self._write(name, state, indexed, ("Complete", ""))

    def _queue(self, name: str) -> bool:
        """Kueue's hold: suspended, no pods, until admitted."""
        self.batch.patch_namespaced_job(name, self.namespace, {"spec": {"suspend": True}})
        suspended = {
            "type": "Suspended",
            "status": "True",
            "reason": "JobSuspended",
            "message": "Job suspended",
            "lastTransitionTime": stamp(),
        }
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": {"conditions": [suspended]}})
        if not self._wait(lambda: name in self.kueue):
            return False
        resumed = {
            **suspended,
            "status": "False",
            "reason": "JobResumed",
            "message": "Job resumed",
            "lastTransitionTime": stamp(),
        }
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": {"conditions": [resumed]}})
        return True

    def _admitted(self, job: dict) -> bool:
        """Pod admission: a missing ServiceAccount refuses every pod; the Job controller says so in an Event and retries."""
        account = job["spec"]["template"]["spec"].get("serviceAccountName")
        if not account:
            return True
        name, posted = job["metadata"]["name"], False
        while not self._stop.is_set():
            try:
                self.core.read_namespaced_service_account(account, self.namespace)
                return True
            except ApiException as error:
                if error.status != 404:
                    raise
            if not posted:  # the controller retries with backoff; its recorder folds repeats into one Event
                message = (
                    f'Error creating: pods "{name}-0-" is forbidden: error looking up service account '
                    f'{self.namespace}/{account}: serviceaccount "{account}" not found'
                )
                self._event(job, "FailedCreate", message)
                posted = True
            self._stop.wait(0.5)
        return False

    def _event(self, job: dict, reason: str, message: str) -> None:
        meta = job["metadata"]
        self.core.create_namespaced_event(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
                "involvedObject": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "namespace": self.namespace,
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": "Warning",
                "source": {"component": "job-controller"},
                "firstTimestamp": stamp(),
                "lastTimestamp": stamp(),
                "count": 1,
            },
        )

    def _env(self, container: dict, placed: dict) -> dict[str, str] | str:
        """The container's environment, or the kubelet's CreateContainerConfigError message."""
        env = {**self.base_env, **device_plugin_env(container, self.npus)}
        for item in container.get("env", []):
            source = item.get("valueFrom") or {}
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                try:
                    secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
                except ApiException as error:
                    if error.status == 404:
                        return f'secret "{ref["name"]}" not found'
                    raise
                env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
            elif "resourceFieldRef" in source:
                env[item["name"]] = cpu_field(container, source["resourceFieldRef"])
            elif "fieldRef" in source:
                env[item["name"]] = pod_field(placed, source["fieldRef"]["fieldPath"])
            else:
                raise KeyError(f"env {item['name']}: the test kubelet cannot resolve {sorted(source)}")
        env["HOME"] = tempfile.gettempdir()  # the pod's scratch volume
        return env

    def _pod(self, job: dict, container: dict, index: int | None, attempt: int, placed: dict) -> str:
        """Create the pod as the Job controller does (template labels plus the controller's own), Pending."""
        meta = job["metadata"]
        name = (
            f"{meta['name']}-{index or 0}-{attempt}-{meta['uid'][:5]}"  # the Job controller's pods have a random suffix
        )
        labels = {
            **job["spec"]["template"]["metadata"].get("labels", {}),
            "batch.kubernetes.io/job-name": meta["name"],
            "job-name": meta["name"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "controller-uid": meta["uid"],
        }
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
        self.core.create_namespaced_pod(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "annotations": placed["annotations"]},
                "spec": {"containers": [{"name": container["name"], "image": container["image"]}]},
                "status": {"phase": "Pending"},
            },
        )
        return name

    def _pod_status(self, pod: str, phase: str, container: dict, state: dict, conditions=()) -> None:
        status = {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": phase == "Running",
            "restartCount": 0,
            "state": state,
        }
        body = {"status": {"phase": phase, "conditions": list(conditions), "containerStatuses": [status]}}
        self.core.patch_namespaced_pod_status(pod, self.namespace, body)

    def _until_it_starts(self, job: str, pod: str, container: dict, placed: dict) -> dict | str | None:
        """Report the pod as Kubernetes would while it cannot start (once per change, as the kubelet
        updates a pod's status); its environment once it can."""
        reported = None
        while not self._stop.is_set():
            if job in self.unschedulable:
                scheduled = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": self.unschedulable[job],
                }
                now = ("Pending", {}, [scheduled])
            elif job in self.image_pull:
                waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{container["image"]}"'}
                now = ("Pending", {"waiting": waiting}, [])
            else:
                env = self._env(container, placed)
                if not isinstance(env, str):
                    return env
                now = ("Pending", {"waiting": {"reason": "CreateContainerConfigError", "message": env}}, [])
            if now != reported:
                self._pod_status(pod, now[0], container, now[1], now[2])
                reported = now
            self._stop.wait(0.3)
        return None

    def _run_pod(self, job: dict, container: dict, index: int | None, attempt: int, placed: dict) -> int:
        name = job["metadata"]["name"]
        key = (name, index or 0)
        pod = self._pod(job, container, index, attempt, placed)
        env = self._until_it_starts(name, pod, container, placed)
        if env is None:
            return 1
        self._pod_status(pod, "Running", container, {"running": {"startedAt": stamp()}})
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        self.environments.append(env)
        message = ""
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            code = 1  # the pod died before the command finished
        elif not self.execute:
            time.sleep(self.slow.get(name, self.pod_seconds))
            code = 0
            message = self.summary(job) if self.summary and container["command"][1:2] == ["aggregate"] else ""
        else:
            code, message = self._command(container, env)
        self.pods.append((name, index if index is not None else 0, code))
        terminated = {"terminated": {"exitCode": code, "message": message, "finishedAt": stamp()}}
        self._pod_status(pod, "Succeeded" if code == 0 else "Failed", container, terminated)
        return code

    def _command(self, container: dict, env: dict) -> tuple[int, str]:
        with tempfile.TemporaryDirectory(prefix="pod-") as tmp:
            log = Path(tmp) / "termination-log"
            command = [str(log) if arg == TERMINATION_LOG else arg for arg in container["command"]]
            assert command[0] == "pnas-eval", command
            result = subprocess.run(
                [sys.executable, "-m", "pnas_jobs", *command[1:]], env=env, capture_output=True, text=True
            )
            return result.returncode, log.read_text() if log.exists() else result.stderr[-2000:]

    def _write(self, name: str, state: dict, indexed: bool, condition: tuple[str, str] | None) -> None:
        with self._lock:
            status = {
                "active": state["active"],
                "succeeded": len(state["succeeded"]),
                "failed": state["failed_pods"],
                "startTime": state["startTime"],
            }
            if indexed:
                status["completedIndexes"] = job_controller.intervals(sorted(state["succeeded"]))
                status["failedIndexes"] = job_controller.intervals(sorted(state["failed"]))
            if condition:
                kind, reason = condition
                status["conditions"] = [
                    {"type": kind, "status": "True", "reason": reason, "message": "", "lastTransitionTime": stamp()}
                ]
                if kind == "Complete":
                    status["completionTime"] = stamp()
        if not self._stop.is_set():
            self.batch.patch_namespaced_job_status(name, self.namespace, {"status": status})
            if condition and condition[0] == "Complete":
                self.completed[name] = time.monotonic()


def cpu_field(container: dict, ref: dict) -> str:
    """The downward API's `limits.cpu` / `requests.cpu`, as the kubelet resolves them: a missing
    limit is the node's allocatable CPUs (here: this machine's), and the value is ceil(milliValue /
    divisor) with the divisor's milli value, default 1 (kubernetes pkg/api/v1/resource/helpers.go,
    convertResourceCPUToString): 1500m is "2" with divisor 1, "1500" with divisor 1m."""
    kind, _, resource = ref["resource"].partition(".")
    if resource != "cpu":
        raise KeyError(f"the test kubelet resolves cpu fields only, not {ref['resource']}")
    value = (container.get("resources") or {}).get(kind, {}).get("cpu")
    milli = millicores(value) if value is not None else 1000 * len(os.sched_getaffinity(0))
    divisor = millicores(ref.get("divisor", "1"))
    return str(-(-milli // divisor))


def millicores(quantity) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def npu_request(container: dict) -> tuple[str, int] | None:
    """The Ascend resource (whole NPUs) a container asks for, and how many."""
    limits = (container.get("resources") or {}).get("limits") or {}
    found = [
        (name, int(count)) for name, count in limits.items() if name.startswith("huawei.com/Ascend") and "-" not in name
    ]
    return found[0] if found else None


def device_plugin_env(container: dict, npus: list[int]) -> dict[str, str]:
    asked = npu_request(container)
    return {"ASCEND_VISIBLE_DEVICES": ",".join(map(str, npus[: asked[1]]))} if asked else {}


def placed_metadata(template: dict, npus: list[int]) -> dict:
    """The pod's labels and annotations once scheduled: Volcano's Ascend plugin adds
    `<resource>: <Type>-<physical id>,...` for the NPUs it picked."""
    labels = dict(template["metadata"].get("labels") or {})
    annotations = dict(template["metadata"].get("annotations") or {})
    asked = npu_request(template["spec"]["containers"][0])
    if template["spec"].get("schedulerName") == "volcano" and asked:
        resource, count = asked
        kind = resource.split("/", 1)[1]
        annotations[resource] = ",".join(f"{kind}-{npu}" for npu in npus[:count])
    return {"labels": labels, "annotations": annotations}


def pod_field(placed: dict, path: str) -> str:
    """A downward-API fieldRef as the kubelet resolves it (k8s.io/kubernetes pkg/fieldpath
    ExtractFieldPathAsString): metadata.labels['k'] / metadata.annotations['k'], "" when absent."""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if not match:
        raise KeyError(f"the test kubelet resolves metadata.labels/annotations fieldRefs only, not {path}")
    return placed[match.group(1)].get(match.group(2), "")


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def service_account(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def clean_env() -> dict[str, str]:
    names = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG")
    return {k: v for k, v in os.environ.items() if k not in names}
