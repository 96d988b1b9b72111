"""The test side of a cluster: the Job controller and the kubelet that kmock does not have.

It watches the Jobs in a namespace of the emulator and, for each index, runs the container's
command on this machine with the container's environment (secretKeyRef resolved from the Secrets
in the emulator, `JOB_COMPLETION_INDEX` set), then writes the Job's status as the Job controller
would: counters, completedIndexes, failedIndexes and the Complete/Failed condition. It honours
`backoffLimitPerIndex`, `backoffLimit` and the pod failure policy's exit-code rule, and for each
finished pod it stores a Pod object carrying the termination message (what the aggregate leaves
in /dev/termination-log). What happens after a failed pod is job_controller.py's decision, as
Kubernetes' Job controller makes it.

Faults are injected per (Job name, index): `fail[(job, index)] = n` makes the first n pods of that
index fail (exit 1, as a crashed node would) before the real command runs; `hold` keeps a Job's
pods from starting until `release(job)`.

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
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

from support import job_controller

TERMINATION_LOG = "/dev/termination-log"


class JobRunner:
    def __init__(self, api_client, namespace: str, base_env: dict[str, str], workers: int = 3):
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.namespace, self.base_env = namespace, base_env
        self.fail: dict[tuple[str, int], int] = {}
        self.hold: set[str] = set()  # Jobs whose pods wait until released
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

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self.batch.list_namespaced_job(self.namespace).items:
                    name = job.metadata.name
                    if name not in self.started:
                        self.started[name] = job.metadata.uid
                        threading.Thread(target=self._run_job, args=(name,), daemon=True).start()
            except Exception as error:  # keep serving; the test sees it in .errors
                self.errors.append(error)
            self._stop.wait(0.2)

    def _run_job(self, name: str) -> None:
        try:
            self._run_job_inner(name)
        except BaseException as error:
            self.errors.append(error)

    def _run_job_inner(self, name: str) -> None:
        api = self.batch.api_client
        job = api.sanitize_for_serialization(self.batch.read_namespaced_job(name, self.namespace))
        spec = job["spec"]
        while name in self.hold and not self._stop.is_set():
            time.sleep(0.1)
        container = spec["template"]["spec"]["containers"][0]
        placed = placed_metadata(spec["template"], self.npus)  # what the scheduler leaves on each pod
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions", 1)
        rules = job_controller.rules_of(job)  # what Kubernetes decides about a failed pod
        state = {"succeeded": set(), "failed": set(), "failed_pods": 0, "active": 0}
        self._write(name, state, indexed, None)

        def run_index(index: int) -> None:
            attempt, failures = 0, 0
            while True:
                with self._lock:
                    state["active"] += 1
                self._write(name, state, indexed, None)
                code = self._run_pod(name, container, index if indexed else None, attempt, placed)
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
        if state["failed"]:
            self._write(name, state, indexed, ("Failed", "FailedIndexes" if indexed else "BackoffLimitExceeded"))
        else:
            self._write(name, state, indexed, ("Complete", ""))

    def _env(self, container: dict, placed: dict) -> dict[str, str]:
        env = {**self.base_env, **device_plugin_env(container, self.npus)}
        for item in container.get("env", []):
            source = item.get("valueFrom") or {}
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
                env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
            elif "resourceFieldRef" in source:
                env[item["name"]] = cpu_field(container, source["resourceFieldRef"])
            elif "fieldRef" in source:
                env[item["name"]] = pod_field(placed, source["fieldRef"]["fieldPath"])
            else:
                raise KeyError(f"env {item['name']}: the test kubelet cannot resolve {sorted(source)}")
        env["HOME"] = tempfile.gettempdir()  # the pod's scratch volume
        return env

    def _run_pod(self, job: str, container: dict, index: int | None, attempt: int, placed: dict) -> int:
        key = (job, index or 0)
        env = self._env(container, placed)
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        self.environments.append(env)
        message = ""
        if self.fail.get(key, 0) > 0:
            self.fail[key] -= 1
            code = 1  # the pod died before the command finished
        else:
            with tempfile.TemporaryDirectory(prefix="pod-") as tmp:
                log = Path(tmp) / "termination-log"
                command = [str(log) if arg == TERMINATION_LOG else arg for arg in container["command"]]
                assert command[0] == "pnas-eval", command
                result = subprocess.run(
                    [sys.executable, "-m", "pnas_jobs", *command[1:]], env=env, capture_output=True, text=True
                )
                code = result.returncode
                message = log.read_text() if log.exists() else result.stderr[-2000:]
        self.pods.append((job, index if index is not None else 0, code))
        pod_name = f"{job}-{index if index is not None else 0}-{attempt}"
        self.core.create_namespaced_pod(
            self.namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "labels": {**placed["labels"], "job-name": job},
                             "annotations": placed["annotations"]},
                "spec": {"containers": [{"name": container["name"], "image": container["image"]}]},
                "status": {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": {"exitCode": code, "message": message}},
                        }
                    ],
                },
            },
        )
        return code

    def _write(self, name: str, state: dict, indexed: bool, condition: tuple[str, str] | None) -> None:
        with self._lock:
            status = {
                "active": state["active"],
                "succeeded": len(state["succeeded"]),
                "failed": state["failed_pods"],
            }
            if indexed:
                status["completedIndexes"] = ",".join(map(str, sorted(state["succeeded"])))
                status["failedIndexes"] = ",".join(map(str, sorted(state["failed"])))
            if condition:
                kind, reason = condition
                status["conditions"] = [{"type": kind, "status": "True", "reason": reason, "message": ""}]
        self.batch.patch_namespaced_job_status(name, self.namespace, {"status": status})


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
    found = [(name, int(count)) for name, count in limits.items() if name.startswith("huawei.com/Ascend") and "-" not in name]
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


def clean_env() -> dict[str, str]:
    names = ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG")
    return {k: v for k, v in os.environ.items() if k not in names}
