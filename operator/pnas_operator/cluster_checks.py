"""Whether a cluster can run a PnasEval: pure checks over what `pnas-eval doctor` read from it.

Each check gives one Finding (pnas_jobs.preflight): ok, warning, or a problem with the command or
change that fixes it. Reading the cluster is kube.py's job; here only the snapshot is judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pnas_jobs.accelerators import ACCELERATOR_LABEL, CHIP_LABEL
from pnas_jobs.backends import registry
from pnas_jobs.plan import Plan
from pnas_jobs.preflight import Finding
from pnas_jobs.spec import PnasEval
from pnas_operator import pod_security

PSS_ENFORCE = "pod-security.kubernetes.io/enforce"
OPERATOR_LABELS = {"app.kubernetes.io/part-of": "pnas-eval", "app.kubernetes.io/component": "operator"}
VOLCANO = "volcano"
# the device plugin's Go flag: `-volcanoType`, `-volcanoType=true` (strconv.ParseBool); mind-cluster's yaml
# passes it inside one `bash -c` string: args ["device-plugin -volcanoType=true -presetVirtualDevice=true ..."]
VOLCANO_FLAG = re.compile(r"(?:^|\s)--?volcanoType(?:=(\S*))?(?=\s|$)")
GO_TRUE = {"1", "t", "T", "true", "TRUE", "True"}


@dataclass
class ClusterSnapshot:
    """What the doctor read; None where a thing does not exist (or, in `forbidden`, could not be read)."""

    namespace: dict | None = None
    crd: dict | None = None
    operators: list[dict] = field(default_factory=list)  # Deployments labelled as the chart labels the operator
    secret_keys: set[str] | None = None  # keys of the credentials Secret
    service_accounts: set[str] = field(default_factory=set)
    nodes: list[dict] = field(default_factory=list)
    local_queues: set[str] | None = None  # None: Kueue's LocalQueue kind is not served
    volcano: bool = False  # the Volcano scheduler's kinds are served
    device_plugins: list[dict] = field(default_factory=list)  # the Ascend device plugin's DaemonSets
    forbidden: set[str] = field(default_factory=set)  # what this user may not read


def _command(deployment: dict) -> list[str]:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return [*containers[0].get("command", []), *containers[0].get("args", [])] if containers else []


def watches(deployment: dict, namespace: str) -> bool:
    """Whether an operator Deployment (as the chart writes its command) watches `namespace`."""
    command = _command(deployment)
    if "--all-namespaces" in command or "-A" in command:
        return True
    named = [command[i + 1] for i, arg in enumerate(command[:-1]) if arg in ("--namespace", "-n")]
    return namespace in {n for value in named for n in value.split(",")} if named else True


def volcano_mode(daemonset: dict) -> bool:
    """Whether a device plugin DaemonSet runs with -volcanoType set (the last one given wins, as in Go)."""
    values = VOLCANO_FLAG.findall(" ".join(_command(daemonset)))
    return bool(values) and (values[-1] == "" or values[-1] in GO_TRUE)


def _not_checked(snapshot: ClusterSnapshot, resource: str, check: str) -> Finding | None:
    if resource in snapshot.forbidden:
        return Finding(check, "warning", f"not allowed to read {resource}: not checked")
    return None


def check_namespace(snapshot: ClusterSnapshot, namespace: str) -> Finding:
    if found := _not_checked(snapshot, "namespaces", "namespace"):
        return found
    if snapshot.namespace is None:
        return Finding(
            "namespace", "problem", f"namespace {namespace} does not exist", f"kubectl create namespace {namespace}"
        )
    return Finding("namespace", "ok", f"{namespace} exists")


def check_crd(snapshot: ClusterSnapshot, expected: dict) -> Finding:
    fix = "kubectl apply --server-side -f crds/pnaseval.yaml"
    if found := _not_checked(snapshot, "customresourcedefinitions", "CRD"):
        return found
    if snapshot.crd is None:
        return Finding("CRD", "problem", "pnasevals.pnaseval.io is not installed", fix)
    installed = snapshot.crd.get("spec", {}).get("versions", [])
    wanted = expected["spec"]["versions"]
    if [v.get("schema") for v in installed] != [v["schema"] for v in wanted]:
        return Finding("CRD", "problem", "installed, but its schema differs from this release's", fix)
    return Finding("CRD", "ok", "installed at this release's schema")


def check_operator(snapshot: ClusterSnapshot, namespace: str) -> tuple[Finding, dict | None]:
    if found := _not_checked(snapshot, "deployments", "operator"):
        return found, None
    running = [d for d in snapshot.operators if (d.get("status") or {}).get("readyReplicas")]
    if not running:
        found = "none is ready" if snapshot.operators else "no operator Deployment found"
        return Finding(
            "operator", "problem", found, "helm install pnas-eval charts/pnas-eval -n pnas-eval --create-namespace"
        ), None
    watching = [d for d in running if watches(d, namespace)]
    if not watching:
        return Finding(
            "operator",
            "problem",
            f"{len(running)} running, none watches namespace {namespace}",
            f'helm upgrade <release> charts/pnas-eval --set watchNamespace={namespace} (or "" for all)',
        ), None
    where = watching[0]["metadata"].get("namespace")
    return Finding("operator", "ok", f"{watching[0]['metadata']['name']} in {where} watches {namespace}"), watching[0]


def check_secret(snapshot: ClusterSnapshot, pnaseval: PnasEval) -> Finding:
    name, namespace = pnaseval.spec.storage.credentials_secret, pnaseval.metadata.namespace
    fix = (
        f"kubectl create secret generic {name} -n {namespace} --from-literal=accessKey=... --from-literal=secretKey=..."
    )
    if "secrets" in snapshot.forbidden:
        return Finding("credentials Secret", "warning", f"not allowed to read Secrets in {namespace}: not checked")
    if snapshot.secret_keys is None:
        return Finding("credentials Secret", "problem", f"Secret {name} does not exist in {namespace}", fix)
    missing = sorted({"accessKey", "secretKey"} - snapshot.secret_keys)
    if missing:
        return Finding("credentials Secret", "problem", f"Secret {name} has no key {', '.join(missing)}", fix)
    return Finding("credentials Secret", "ok", f"{name} has accessKey and secretKey")


def check_service_account(snapshot: ClusterSnapshot, jobs: list[dict], namespace: str) -> Finding:
    """The account the Jobs' pods run as (the operator's setting; none: the namespace's `default`)."""
    name = next((j["spec"]["template"]["spec"].get("serviceAccountName") for j in jobs), None) or "default"
    if found := _not_checked(snapshot, "serviceaccounts", "Jobs' ServiceAccount"):
        return found
    if name in snapshot.service_accounts:
        return Finding("Jobs' ServiceAccount", "ok", f"{name} exists in {namespace}")
    return Finding(
        "Jobs' ServiceAccount",
        "problem",
        f"{name} does not exist in {namespace}",
        f"helm upgrade <release> charts/pnas-eval --set 'jobs.serviceAccount.namespaces={{{namespace}}}' "
        f"(or kubectl create serviceaccount {name} -n {namespace})",
    )


def tolerates(tolerations, taint: dict) -> bool:
    """Kubernetes' toleration matching (core/v1 Toleration.ToleratesTaint)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _allocatable(node: dict, resource: str) -> int:
    value = str((node.get("status") or {}).get("allocatable", {}).get(resource, "0"))
    return int(value) if value.isdigit() else 0


def check_nodes(snapshot: ClusterSnapshot, pnaseval: PnasEval, plan: Plan) -> list[Finding]:
    """Nodes that match the inference placement, offer its resources, and admit its tolerations."""
    placement = plan.infer_steps()[0].placement
    selector = placement.node_selector if placement else {}
    if "nodes" in snapshot.forbidden:
        return [Finding("nodes", "warning", "not allowed to list nodes: placement not checked")]
    matching = [
        n for n in snapshot.nodes if selector.items() <= ((n.get("metadata") or {}).get("labels") or {}).items()
    ]
    if not matching:
        return [_no_matching_node(snapshot, pnaseval, selector)]
    findings = []
    extended = {
        r: int(v) for r, v in (placement.resources if placement else {}).items() if "/" in r and str(v).isdigit()
    }
    for resource, each in extended.items():
        units = sum(_allocatable(n, resource) // max(each, 1) for n in matching)
        if not units:
            findings.append(
                Finding(
                    "nodes: resources",
                    "problem",
                    f"the {len(matching)} matching nodes offer no {resource}",
                    "install the device plugin there, or change spec.inference.resources",
                )
            )
        elif units < pnaseval.spec.inference.parallelism:
            findings.append(
                Finding(
                    "nodes: resources",
                    "warning",
                    f"{units} x {resource} allocatable on matching nodes "
                    f"for parallelism {pnaseval.spec.inference.parallelism}: pods will queue",
                )
            )
        else:
            findings.append(
                Finding("nodes: resources", "ok", f"{units} x {resource} allocatable on {len(matching)} nodes")
            )
    tolerations = list(placement.tolerations) if placement else []
    blocked = [
        n
        for n in matching
        if any(
            t.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, t)
            for t in (n.get("spec") or {}).get("taints", [])
        )
    ]
    if blocked and len(blocked) == len(matching):
        taint = next(t for t in blocked[0]["spec"]["taints"] if not tolerates(tolerations, t))
        findings.append(
            Finding(
                "nodes: taints",
                "problem",
                f"every matching node has a taint the pods do not tolerate "
                f"({taint.get('key')}={taint.get('value', '')}:{taint.get('effect')})",
                f"set spec.inference.tolerations: {_flow([*tolerations, {'key': taint.get('key'), 'operator': 'Exists', 'effect': taint.get('effect')}])}"
                " (it replaces the default ones)",
            )
        )
    else:
        findings.append(
            Finding(
                "nodes: taints",
                "ok",
                f"{len(matching) - len(blocked)} of {len(matching)} matching nodes admit the pods",
            )
        )
    return findings


def _flow(items: list[dict]) -> str:
    """[{key: a, operator: Exists}]: a list of mappings as YAML flow style, for a fix to paste."""
    return "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in item.items()) + "}" for item in items) + "]"


def _no_matching_node(snapshot: ClusterSnapshot, pnaseval: PnasEval, selector: dict) -> Finding:
    wanted = ", ".join(f"{k}={v}" for k, v in selector.items())
    family = selector.get(ACCELERATOR_LABEL)
    chips = sorted(
        {
            (n["metadata"].get("labels") or {}).get(CHIP_LABEL, "?")
            for n in snapshot.nodes
            if (n["metadata"].get("labels") or {}).get(ACCELERATOR_LABEL) == family
        }
    )
    if family and CHIP_LABEL in selector and chips:
        return Finding(
            "nodes: chip",
            "problem",
            f"no {selector[CHIP_LABEL]} node: the {family} nodes carry chips {', '.join(chips)}; "
            f"an .om built for {pnaseval.spec.convert.soc_version} runs only on its chip",
            f"set spec.convert.socVersion to Ascend{chips[0]} (the chip `npu-smi info` shows)",
        )
    return Finding(
        "nodes",
        "problem",
        f"no node has the labels {wanted or '(none)'}",
        "label the nodes (the device plugin sets accelerator and the chip label) or set spec.inference.nodeSelector",
    )


def check_pod_security(snapshot: ClusterSnapshot, jobs: list[dict], namespace: str) -> Finding:
    if found := _not_checked(snapshot, "namespaces", "Pod Security"):
        return found
    level = ((snapshot.namespace or {}).get("metadata", {}).get("labels") or {}).get(PSS_ENFORCE, "privileged")
    refused = {
        j["metadata"]["name"]: v for j in jobs if (v := pod_security.violations(j["spec"]["template"]["spec"], level))
    }
    if refused:
        name, problems = next(iter(refused.items()))
        return Finding(
            "Pod Security",
            "problem",
            f"namespace {namespace} enforces {level}; {name} would be refused: {problems[0]}",
            'leave the operator\'s Ascend driver mount off (jobs.ascendDriverPath ""), or run in a namespace that admits it',
        )
    return Finding("Pod Security", "ok", f"namespace {namespace} enforces {level}: every pod of the plan is admitted")


def check_scheduling(snapshot: ClusterSnapshot, pnaseval: PnasEval) -> list[Finding]:
    scheduling, namespace = pnaseval.spec.scheduling, pnaseval.metadata.namespace
    findings = []
    if scheduling.queue_name:
        if found := _not_checked(snapshot, "localqueues", "Kueue"):
            findings.append(found)
        elif snapshot.local_queues is None:
            findings.append(
                Finding(
                    "Kueue",
                    "problem",
                    "spec.scheduling.queueName is set but Kueue is not installed (no localqueues.kueue.x-k8s.io)",
                    "install Kueue, or remove spec.scheduling.queueName",
                )
            )
        elif scheduling.queue_name not in snapshot.local_queues:
            known = ", ".join(sorted(snapshot.local_queues)) or "none"
            findings.append(
                Finding(
                    "Kueue",
                    "problem",
                    f"no LocalQueue {scheduling.queue_name} in {namespace} (found: {known})",
                    f"kubectl get localqueues -n {namespace}; set spec.scheduling.queueName to one of them",
                )
            )
        else:
            findings.append(Finding("Kueue", "ok", f"LocalQueue {scheduling.queue_name} exists"))
    if scheduling.scheduler_name == VOLCANO and (found := _not_checked(snapshot, "podgroups", "Volcano")):
        findings.append(found)
    elif scheduling.scheduler_name == VOLCANO and not snapshot.volcano:
        findings.append(
            Finding(
                "Volcano",
                "problem",
                "spec.scheduling.schedulerName is volcano but Volcano is not installed",
                "install Volcano, or remove spec.scheduling.schedulerName",
            )
        )
    elif scheduling.scheduler_name == VOLCANO:
        findings.append(Finding("Volcano", "ok", "Volcano is installed (PodGroups served)"))
    return findings


def check_device_plugin(snapshot: ClusterSnapshot, pnaseval: PnasEval) -> list[Finding]:
    """The Ascend device plugin's mode against the spec: in Volcano mode it allocates only pods Volcano placed."""
    if registry.get(pnaseval.spec.inference.backend).image != "ascend":
        return []
    if found := _not_checked(snapshot, "daemonsets", "device plugin"):
        return [found]
    if not snapshot.device_plugins:
        return [Finding("device plugin", "warning", "no ascend-device-plugin DaemonSet found: its mode is not checked")]
    by_volcano = pnaseval.spec.scheduling.scheduler_name == VOLCANO
    if any(volcano_mode(d) for d in snapshot.device_plugins):
        if by_volcano:
            return [Finding("device plugin", "ok", "Volcano mode (-volcanoType=true), and the spec asks for Volcano")]
        return [
            Finding(
                "device plugin",
                "problem",
                "the Ascend device plugin runs in Volcano mode (-volcanoType=true): "
                "NPU pods not placed by Volcano fail at allocation",
                "set spec.scheduling.schedulerName: volcano",
            )
        ]
    return [Finding("device plugin", "ok", "the Ascend device plugin allocates on its own (no -volcanoType)")]


def cluster_findings(
    snapshot: ClusterSnapshot, pnaseval: PnasEval, plan: Plan, jobs: list[dict], expected_crd: dict
) -> list[Finding]:
    """Every cluster check, in the order a newcomer would fix them."""
    namespace = pnaseval.metadata.namespace
    return [
        check_namespace(snapshot, namespace),
        check_crd(snapshot, expected_crd),
        check_operator(snapshot, namespace)[0],
        check_secret(snapshot, pnaseval),
        check_service_account(snapshot, jobs, namespace),
        *check_nodes(snapshot, pnaseval, plan),
        check_pod_security(snapshot, jobs, namespace),
        *check_scheduling(snapshot, pnaseval),
        *check_device_plugin(snapshot, pnaseval),
    ]
