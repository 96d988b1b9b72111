"""The install path: the Helm chart rendered by the real Helm engine, the Jobs the operator makes
from the examples, and the Dockerfiles.

Every rendered object is validated against the Kubernetes 1.33 schemas; RBAC is compared with
what the operator needs, rule by rule; every pod must meet the restricted security profile; no
credential may appear outside a Secret.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from functools import cache
from pathlib import Path
from unittest import mock

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from pnas_jobs import crd
from pnas_jobs.plan import cluster_problems, make_plan
from pnas_jobs.spec import load_manifest
from pnas_operator import manifests
from pnas_operator.settings import OperatorSettings
from pnas_operator import pod_security

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "pnas-eval"
DOCKER = REPO / "docker"
KUBE_VERSION = "1.33"
RELEASE, NAMESPACE = "pnas-eval", "pnas"
CLUSTER_EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.yaml") if p.name != "local.yaml")

ACCESS_KEY, SECRET_KEY = "given-access-key", "given-secret-key-0123456789"

# Each documented option, rendered and checked like the defaults.
SCENARIOS: dict[str, dict] = {
    "default": {},
    "cluster-wide": {"watchNamespace": "", "jobs": {"serviceAccount": {"namespaces": ["team-a", "team-b"]}}},
    "other-namespace": {"watchNamespace": "team-a"},
    "custom-images": {
        "imagePullSecrets": [{"name": "registry"}],
        "operator": {"image": {"repository": "registry.example/pnas/operator", "tag": "1.2.3", "pullPolicy": "Always"}},
        "jobs": {
            "image": {"repository": "registry.example/pnas/jobs", "tag": "1.2.3-cuda"},
            "ascendImage": {"repository": "registry.example/pnas/jobs-ascend", "tag": "1.2.3-cann8"},
            "imagePullPolicy": "Always",
        },
    },
    "tuned": {
        "operator": {
            "reconcile": {"resyncInterval": 2.5, "apiTimeout": 10},
            "verbose": True,
            "nodeSelector": {"role": "system"},
        },
        "jobs": {
            "serviceAccount": {"name": "evaluator", "annotations": {"iam.example/role": "s3-reader"}},
            "ttlSecondsAfterFinished": 1000000,
            "retries": 5,
            "ascendDriverPath": "/opt/Ascend/driver",
            "scratchSize": "100Gi",
            "runAsUser": 2000,
            "runAsGroup": 3000,
            "resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "32Gi"}},
            "schedulerName": "volcano",
            "queueName": "site-queue",
            "priorityClassName": "batch-low",
        },
    },
    "existing-service-accounts": {
        "operator": {"serviceAccount": {"create": False, "name": "ops"}},
        "jobs": {"serviceAccount": {"create": False, "name": ""}},
        "rbac": {"aggregateToDefaultRoles": False},
    },
    "no-rbac": {"rbac": {"create": False}},
    "minio": {"minio": {"enabled": True, "credentials": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}}},
    "service-monitor": {
        "operator": {"metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    },
    "subchart-globals": {"global": {"imageRegistry": "registry.example", "storageClass": "fast"}},
    "minio-given-credentials": {
        "minio": {
            "enabled": True,
            "credentials": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY},
            "persistence": {"enabled": False, "size": "10Gi"},
            "service": {"type": "NodePort"},
        }
    },
    "minio-existing-secret": {
        "minio": {
            "enabled": True,
            "credentials": {"existingSecret": "my-s3"},
            "persistence": {"storageClassName": "fast"},
        }
    },
}

# What the operator does with the API (operator/pnas_operator/kube.py, handlers.py, kopf), no more.
OPERATOR_RULES = {
    ("pnaseval.io", "pnasevals"): {"get", "list", "watch", "patch", "update"},
    ("pnaseval.io", "pnasevals/status"): {"get", "patch", "update"},
    ("pnaseval.io", "pnasevals/finalizers"): {"update"},  # blockOwnerDeletion on the Jobs' owner reference
    ("batch", "jobs"): {"get", "list", "watch", "create"},  # kube.py's calls and kopf's index (test below)
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"list", "create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
KOPF_DISCOVERY = {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
KOPF_NAMESPACES = {("", "namespaces"): {"list", "watch"}}  # kopf reads them only when not cluster-wide


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@cache
def _render(scenario: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as loaded:
        return loaded.render(SCENARIOS[scenario], name=RELEASE, namespace=NAMESPACE)


def objects(scenario: str) -> list[dict]:
    out = []
    for template, text in sorted(_render(scenario).items()):
        if template.endswith("NOTES.txt"):
            continue
        out += [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def notes(scenario: str) -> str:
    return _render(scenario)[f"{CHART.name}/templates/NOTES.txt"]


def of_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def operator_deployment(objs: list[dict]) -> dict:
    (deployment,) = [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    return deployment


def container_env(deployment: dict) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def settings_from(deployment: dict) -> OperatorSettings:
    """The operator's settings as the deployed pod would read them from its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PNAS_OPERATOR_")}
    with mock.patch.dict(os.environ, {**env, **container_env(deployment)}, clear=True):
        return OperatorSettings()


def validate(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {where}: {error.message}")


def pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return [obj["spec"]["template"]["spec"]]
    return []


def check_pod_security(pod: dict, where: str, annotations: dict | None = None) -> None:
    """The restricted Pod Security level, every rule of it, volumes included (support/pod_security.py),
    and the project's own: a read-only root file system and memory bounds on every container."""
    assert pod_security.violations(pod, "restricted", annotations) == [], where
    for container in pod_security.containers(pod):
        context = container.get("securityContext") or {}
        name = f"{where} container {container['name']}"
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
        resources = container.get("resources") or {}
        assert resources.get("requests", {}).get("memory") and resources.get("limits", {}).get("memory"), name


def check_env_has_no_literal_credentials(pod: dict, where: str) -> None:
    secretish = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|ROOT_USER|CREDENTIAL", re.I)
    for container in pod["containers"] + pod.get("initContainers", []):
        assert not container.get("envFrom"), f"{where}: envFrom could carry anything"
        for env in container.get("env", []):
            if secretish.search(env["name"]):
                assert "value" not in env, f"{where}: {env['name']} is a literal"
                assert "secretKeyRef" in env.get("valueFrom", {}), f"{where}: {env['name']} must come from a Secret"


# ---------------------------------------------------------------------------------- the chart


def test_lint_reports_no_errors_or_warnings():
    for kube_version in ("v1.29.0", "v1.33.0"):
        report = helm.lint(CHART, strict=True, kube_version=kube_version)
        assert report["errors"] == []
        problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
        assert problems == [], problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid_kubernetes(scenario):
    objs = objects(scenario)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):  # the Prometheus Operator's CRD, not in the schemas
            assert obj["kind"] == "ServiceMonitor" and obj["spec"]["endpoints"][0]["port"] == "metrics"
        else:
            validate(obj)
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{obj['kind']} {obj['metadata']['name']}: no namespace"


def test_the_crd_is_the_generated_one(chart):
    generated = crd.render()
    chart_copy = (CHART / "crds" / "pnaseval.yaml").read_bytes()
    assert chart_copy == (REPO / "crds" / "pnaseval.yaml").read_bytes()
    assert chart_copy.decode() == generated, (
        "stale: run `pnas-eval crd --write crds/pnaseval.yaml charts/pnas-eval/crds/pnaseval.yaml`"
    )
    assert [c["name"] for c in chart.crds] == ["crds/pnaseval.yaml"]
    assert chart.crds[0]["data"] == generated
    validate(yaml.safe_load(generated))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_has_no_wildcards(scenario):
    for role in of_kind(objects(scenario), "Role") + of_kind(objects(scenario), "ClusterRole"):
        for rule in role["rules"]:
            for field in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in v for v in rule.get(field, [])), f"{role['metadata']['name']}: {rule}"


def grants(objs: list[dict], account: str, namespace: str) -> dict[str, dict]:
    """What a ServiceAccount may do: {namespace or "cluster": {(group, resource): verbs}}."""
    roles = {
        (r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"]): r
        for r in objs
        if r["kind"] in ("Role", "ClusterRole")
    }
    out: dict[str, dict] = {}
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") or "cluster"
        role = roles[
            (ref["kind"], binding["metadata"].get("namespace") if ref["kind"] == "Role" else None, ref["name"])
        ]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault(scope, {}).setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize(
    "scenario, watched",
    [("default", NAMESPACE), ("other-namespace", "team-a"), ("cluster-wide", None)],
)
def test_operator_gets_exactly_the_permissions_it_needs(scenario, watched):
    objs = objects(scenario)
    deployment = operator_deployment(objs)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    granted = grants(objs, account, NAMESPACE)
    if watched:
        assert command[1:3] == ["--namespace", watched] and "--all-namespaces" not in command
        assert granted == {watched: OPERATOR_RULES, "cluster": {**KOPF_DISCOVERY, **KOPF_NAMESPACES}}
        assert [r["metadata"]["namespace"] for r in of_kind(objs, "Role")] == [watched]
    else:
        assert "--all-namespaces" in command and "--namespace" not in command
        assert granted == {"cluster": {**OPERATOR_RULES, **KOPF_DISCOVERY}}
        assert of_kind(objs, "Role") == of_kind(objs, "RoleBinding") == []


def test_the_job_pod_and_event_rules_are_the_calls_the_operator_makes():
    """kube.py is the operator's one door to the API; kopf watches what handlers.py indexes, and posts Events."""
    source = (REPO / "operator" / "pnas_operator" / "kube.py").read_text()
    handlers = (REPO / "operator" / "pnas_operator" / "handlers.py").read_text()
    keys = {"job": ("batch", "jobs"), "pod": ("", "pods"), "event": ("", "events")}
    made: dict[tuple[str, str], set[str]] = {("", "events"): {"create", "patch"}}  # kopf.event
    for verb, kind in re.findall(
        r"\.(list|create|get|read|watch|patch|delete|replace)_namespaced_(job|pod|event)\b", source
    ):
        made.setdefault(keys[kind], set()).add({"read": "get"}.get(verb, verb))
    for resource in re.findall(
        r'@kopf\.index\((?:"batch", )?"v1", "(jobs|pods)"', handlers
    ):  # a watch: list, then watch
        made.setdefault(("batch", "jobs") if resource == "jobs" else ("", "pods"), set()).update({"list", "watch"})
    assert made == {key: OPERATOR_RULES[key] for key in made} and set(made) == set(keys.values())


def test_users_may_create_pnasevals_through_the_default_roles():
    labels = {
        label
        for role in of_kind(objects("default"), "ClusterRole")
        for label, value in role["metadata"]["labels"].items()
        if label.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true"
    }
    assert labels == {f"rbac.authorization.k8s.io/aggregate-to-{r}" for r in ("view", "edit", "admin")}
    assert not [
        r for r in of_kind(objects("existing-service-accounts"), "ClusterRole") if "view" in r["metadata"]["name"]
    ]


def test_no_rbac_when_disabled():
    kinds = {o["kind"] for o in objects("no-rbac")}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_restricted(scenario):
    pods = [(o["metadata"]["name"], o["spec"]["template"], spec) for o in objects(scenario) for spec in pod_specs(o)]
    assert pods
    for name, template, pod in pods:
        check_pod_security(pod, name, template["metadata"].get("annotations"))


@pytest.mark.parametrize(
    "change, says",
    [
        (
            lambda p: p["volumes"].append({"name": "driver", "hostPath": {"path": "/usr/local/Ascend/driver"}}),
            "hostPath",
        ),
        (lambda p: p["volumes"].append({"name": "nfs", "nfs": {"server": "x", "path": "/"}}), "type nfs"),
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (
            lambda p: [
                c.pop("seccompProfile", None) for c in (p["securityContext"], p["containers"][0]["securityContext"])
            ],
            "seccompProfile must be",
        ),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser: 0"),
        (lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax"),
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
        (lambda p: p["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
        (lambda p: p["containers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
        (lambda p: p["containers"][0]["securityContext"].update(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions"),
        (lambda p: p["containers"][0]["securityContext"].update(procMount="Unmasked"), "procMount"),
        (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    ],
)
def test_the_restricted_check_can_fail(change, says):
    """Each rule of the check, broken once on a pod that passes (the operator's)."""
    pod = copy.deepcopy(operator_deployment(objects("default"))["spec"]["template"]["spec"])
    assert pod_security.violations(pod) == []
    change(pod)
    found = pod_security.violations(pod)
    assert len(found) == 1 and says in found[0], found


def test_operator_deployment_is_one_recreated_replica_with_a_liveness_probe():
    deployment = operator_deployment(objects("default"))
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][0] == "pnas-operator"
    liveness = container["command"][container["command"].index("--liveness") + 1]
    assert liveness == "http://0.0.0.0:8080/healthz"
    probe = container["livenessProbe"]["httpGet"]
    (port,) = [p for p in container["ports"] if p["name"] == probe["port"]]
    assert (probe["path"], port["containerPort"]) == ("/healthz", 8080)
    ready = container["readinessProbe"]["httpGet"]
    (metrics,) = [p for p in container["ports"] if p["name"] == ready["port"]]
    assert (ready["path"], metrics["containerPort"]) == ("/readyz", 8081)
    assert container_env(deployment)["PNAS_OPERATOR_PROBE_PORT"] == "8081"
    assert pod["securityContext"]["runAsUser"] == 1000 and container["securityContext"]["runAsUser"] == 1000
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert set(container["resources"]) == {"requests", "limits"}


def test_operator_reads_every_setting_and_only_settings():
    """The chart sets exactly the variables settings.py reads; its defaults are the operator's."""
    deployment = operator_deployment(objects("default"))
    expected = {f"PNAS_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(container_env(deployment)) == expected
    defaults = {name: field.default for name, field in OperatorSettings.model_fields.items()}
    assert settings_from(deployment).model_dump() == defaults


@pytest.mark.parametrize("scenario", ["custom-images", "tuned", "existing-service-accounts"])
def test_values_reach_the_jobs_through_the_operator_settings(scenario):
    values, objs = SCENARIOS[scenario], objects(scenario)
    deployment = operator_deployment(objs)
    settings = settings_from(deployment)
    jobs = settings.job_settings()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    merged = {**defaults["jobs"], **values.get("jobs", {})}
    assert jobs.jobs_image == "{repository}:{tag}".format(**merged["image"])
    assert jobs.ascend_image == "{repository}:{tag}".format(**merged["ascendImage"])
    assert jobs.image_pull_policy == merged["imagePullPolicy"]
    assert jobs.job_ttl_seconds == merged["ttlSecondsAfterFinished"]
    assert jobs.retries == merged["retries"]
    assert (jobs.ascend_driver_path, jobs.scratch_size) == (merged["ascendDriverPath"], merged["scratchSize"])
    assert (jobs.run_as_user, jobs.run_as_group) == (merged["runAsUser"], merged["runAsGroup"])
    assert (jobs.scheduler_name, jobs.queue_name, jobs.priority_class_name) == (
        merged["schedulerName"],
        merged["queueName"],
        merged["priorityClassName"],
    )
    resources = merged["resources"]
    assert (jobs.cpu_request, jobs.memory_request, jobs.memory_limit) == (
        str(resources["requests"]["cpu"]),
        resources["requests"]["memory"],
        resources["limits"]["memory"],
    )
    reconcile = {**defaults["operator"]["reconcile"], **values.get("operator", {}).get("reconcile", {})}
    assert (settings.resync_interval, settings.api_timeout) == (reconcile["resyncInterval"], reconcile["apiTimeout"])
    accounts = [
        a for a in of_kind(objs, "ServiceAccount") if a["metadata"]["labels"]["app.kubernetes.io/component"] == "jobs"
    ]
    if jobs.jobs_service_account:
        (account,) = accounts
        assert account["metadata"]["name"] == jobs.jobs_service_account
        assert account["automountServiceAccountToken"] is False
        assert account.get("imagePullSecrets", []) == values.get("imagePullSecrets", [])
    else:
        assert accounts == []  # the Jobs run as their namespace's default account


def test_jobs_service_account_exists_where_jobs_run():
    for scenario, namespaces in (
        ("default", [NAMESPACE]),
        ("other-namespace", ["team-a"]),
        ("cluster-wide", ["team-a", "team-b"]),
    ):
        objs = objects(scenario)
        name = container_env(operator_deployment(objs))["PNAS_OPERATOR_JOBS_SERVICE_ACCOUNT"]
        found = [a["metadata"]["namespace"] for a in of_kind(objs, "ServiceAccount") if a["metadata"]["name"] == name]
        assert found == namespaces, scenario
        bound = {
            s["name"] for b in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding") for s in b["subjects"]
        }
        assert name not in bound, "the Jobs need no API access"


def test_minio_is_off_by_default_and_complete_when_on():
    assert not [o for o in objects("default") if o["metadata"]["name"].endswith("-minio")]
    objs = objects("minio")
    kinds = sorted(
        o["kind"] for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "minio"
    )
    assert kinds == ["Deployment", "PersistentVolumeClaim", "Secret", "Service"]
    (service,) = [s for s in of_kind(objs, "Service") if s["metadata"]["name"].endswith("-minio")]
    assert service["metadata"]["name"] == f"{RELEASE}-minio" and {p["port"] for p in service["spec"]["ports"]} == {
        9000,
        9001,
    }
    assert f"{RELEASE}-minio.{NAMESPACE}.svc:9000" in notes("minio")
    pod = [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"].endswith("-minio")][0]["spec"]["template"][
        "spec"
    ]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": f"{RELEASE}-minio"}} in pod["volumes"]
    assert pod["automountServiceAccountToken"] is False  # MinIO never talks to the API
    ephemeral = [
        d for d in of_kind(objects("minio-given-credentials"), "Deployment") if d["metadata"]["name"].endswith("-minio")
    ]
    assert {"name": "data", "emptyDir": {"sizeLimit": "10Gi"}} in ephemeral[0]["spec"]["template"]["spec"]["volumes"]
    assert not of_kind(objects("minio-given-credentials"), "PersistentVolumeClaim")
    (claim,) = of_kind(objects("minio-existing-secret"), "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "fast"


def secrets(objs: list[dict]) -> dict[tuple[str, str], dict[str, str]]:
    return {
        (s["metadata"]["namespace"], s["metadata"]["name"]): {
            k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()
        }
        | dict(s.get("stringData", {}))
        for s in of_kind(objs, "Secret")
    }


def test_minio_credentials_are_given_never_generated_and_shared_with_the_jobs(chart):
    given = {(NAMESPACE, "minio-credentials"): {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}}
    assert (
        secrets(objects("minio")) == secrets(objects("minio-given-credentials")) == given
    )  # the name PnasEvals default to
    assert secrets(objects("minio-existing-secret")) == {}
    minio = [
        d for d in of_kind(objects("minio-existing-secret"), "Deployment") if d["metadata"]["name"].endswith("-minio")
    ]
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in minio[0]["spec"]["template"]["spec"]["containers"][0]["env"]
        if "valueFrom" in e
    }
    assert refs == {"my-s3"}
    # stable across renders (helm template, a GitOps sync): nothing random
    again = chart.render(SCENARIOS["minio"], name=RELEASE, namespace=NAMESPACE)
    assert again == _render("minio")
    # no keys and no Secret: refused, saying what to set
    with pytest.raises(Exception) as caught:
        chart.render({"minio": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE)
    assert "minio.credentials.existingSecret, or both minio.credentials.accessKey and secretKey" in str(caught.value)
    # PnasEvals in other namespaces find the same keys there
    spread = chart.render({**SCENARIOS["minio"], "watchNamespace": "team-a"}, name=RELEASE, namespace=NAMESPACE)
    copies = secrets([d for t, text in spread.items() if t.endswith(".yaml") for d in yaml.safe_load_all(text) if d])
    assert set(copies) == {(NAMESPACE, "minio-credentials"), ("team-a", "minio-credentials")}
    assert len({json.dumps(v, sort_keys=True) for v in copies.values()}) == 1


def test_metrics_service_and_optional_service_monitor():
    (service,) = [
        s for s in of_kind(objects("default"), "Service") if s["metadata"]["name"].endswith("-operator-metrics")
    ]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    assert not [o for o in objects("default") if o["kind"] == "ServiceMonitor"]
    (monitor,) = [o for o in objects("service-monitor") if o["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    deployment = operator_deployment(objects("service-monitor"))
    assert settings_from(deployment).probe_port == 9100


@pytest.mark.parametrize("scenario", ["minio", "minio-given-credentials", "minio-existing-secret"])
def test_no_credential_outside_a_secret(scenario):
    objs = objects(scenario)
    literals = {v for keys in secrets(objs).values() for v in keys.values()} | {ACCESS_KEY, SECRET_KEY}
    assert not of_kind(objs, "ConfigMap")
    for obj in objs:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        assert not [v for v in literals if v in text], f"{obj['kind']} {obj['metadata']['name']} carries a credential"
        for pod in pod_specs(obj):
            check_env_has_no_literal_credentials(pod, obj["metadata"]["name"])
    assert not [v for v in literals if v in notes(scenario)]


@pytest.mark.parametrize(
    "values, where, says",
    [
        ({"bogus": 1}, "", "additional properties 'bogus' not allowed"),
        ({"operator": {"imageTag": "x"}}, "/operator", "additional properties 'imageTag' not allowed"),
        ({"jobs": {"retries": "two"}}, "/jobs/retries", "want integer"),
        ({"operator": {"reconcile": {"apiTimeout": 0}}}, "/operator/reconcile/apiTimeout", "exclusiveMinimum"),
        ({"global": "x"}, "/global", "want object"),
        ({"operator": {"image": {"repository": ""}}}, "/operator/image/repository", "minLength"),
        ({"jobs": {"ascendImage": {"tag": ""}}}, "/jobs/ascendImage/tag", "minLength"),
        ({"jobs": {"imagePullPolicy": "Sometimes"}}, "/jobs/imagePullPolicy", "must be one of"),
        (
            {"jobs": {"resources": {"requests": {"cpu": "lots"}}}},
            "/jobs/resources/requests/cpu",
            "does not match pattern",
        ),
        ({"jobs": {"resources": {"limits": {"cpu": "2"}}}}, "/jobs/resources/limits", "'cpu' not allowed"),
        ({"jobs": {"runAsUser": 0}}, "/jobs/runAsUser", "minimum"),
        ({"jobs": {"ascendDriverPath": "usr/local/Ascend/driver"}}, "/jobs/ascendDriverPath", "does not match pattern"),
        ({"jobs": {"queueName": "team a"}}, "/jobs/queueName", "does not match pattern"),
        ({"jobs": {"ttlSecondsAfterFinished": 0}}, "/jobs/ttlSecondsAfterFinished", "minimum"),
        ({"watchNamespace": "Team_A"}, "/watchNamespace", "does not match pattern"),
        ({"minio": {"service": {"type": "Ingress"}}}, "/minio/service/type", "must be one of"),
        ({"minio": {"credentials": {"secretKey": "short"}}}, "/minio/credentials/secretKey", "minLength"),
    ],
)
def test_bad_values_are_rejected_with_a_readable_message(chart, values, where, says):
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    message = str(caught.value)
    assert f"at '{where}'" in message and says in message, message
    assert "short" not in message, "schema errors must not echo credentials"


def _values_leaves() -> dict[str, list[str]]:
    """Leaf keys of values.yaml (dotted path) -> the comment block just above each."""
    leaves, stack, comments = {}, [], []
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        if not stripped or stripped.startswith("- "):
            comments = [] if not stripped else comments
            continue
        indent = len(line) - len(line.lstrip())
        key, _, rest = stripped.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if rest.strip():
            leaves[path] = comments
        else:
            stack.append((indent, key))
        comments = []
    return leaves


def _schema_leaves(node: dict, schema: dict, prefix: str = "") -> set[str]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "properties" not in node:
        return {prefix}
    assert node.get("additionalProperties") is False, f"{prefix or 'the top level'} must refuse unknown keys"
    return {
        leaf
        for key, child in node["properties"].items()
        for leaf in _schema_leaves(child, schema, f"{prefix}.{key}".lstrip("."))
    }


def test_every_value_is_documented_and_in_the_schema():
    leaves = _values_leaves()
    undocumented = [path for path, block in leaves.items() if not any(c.startswith("# -- ") for c in block)]
    assert undocumented == []
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _schema_leaves(schema, schema) == set(leaves)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    tags = {
        defaults["operator"]["image"]["tag"],
        defaults["jobs"]["image"]["tag"],
        defaults["jobs"]["ascendImage"]["tag"],
    }
    assert (chart["apiVersion"], chart["appVersion"], tags) == ("v2", "0.1.0", {chart["appVersion"]})


def test_notes_tell_the_next_commands():
    text = notes("default")
    for command in (
        f"kubectl apply -n {NAMESPACE} -f examples/",
        f"kubectl get pe -n {NAMESPACE} -w",
        "kubectl describe pe",
    ):
        assert command in text
    assert "kubectl create secret generic minio-credentials" in text
    assert "never upgrades CRDs" in text and "kubectl apply --server-side -f crds/pnaseval.yaml" in text
    assert "every namespace" in notes("cluster-wide")
    assert len(text.splitlines()) < 25


# -------------------------------------------------------------- the Jobs the operator creates


@pytest.mark.parametrize("example", CLUSTER_EXAMPLES, ids=lambda p: p.name)
def test_operator_jobs_for_the_examples_are_valid_and_restricted(example):
    manifest = load_manifest(example)
    assert cluster_problems(manifest) == []
    settings = settings_from(operator_deployment(objects("default"))).job_settings()
    plan = make_plan(manifest, manifest.spec.storage.uri, summary_file=manifests.TERMINATION_LOG)
    owner = manifests.Owner(manifest.metadata.name, NAMESPACE, str(uuid.uuid4()))
    jobs = manifests.jobs_for_plan(plan, manifest.spec, owner, settings)
    jobs.append(manifests.cleanup_job(plan, manifest.spec, owner, settings))
    for job in jobs:
        validate(job)
        pod = job["spec"]["template"]["spec"]
        check_pod_security(pod, job["metadata"]["name"])
        check_env_has_no_literal_credentials(pod, job["metadata"]["name"])
        assert pod["serviceAccountName"] == f"{RELEASE}-jobs"
        assert pod["containers"][0]["image"] in (settings.jobs_image, settings.ascend_image)
        env = pod["containers"][0]["env"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
        assert refs == {manifest.spec.storage.credentials_secret}


# ------------------------------------------------------------------------------ the images


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (DOCKER / name).read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not current):
            continue
        if line.startswith("#"):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


IMAGES = {
    "operator.Dockerfile": {"entrypoint": ["pnas-operator"], "installs": "[operator]"},
    "jobs.Dockerfile": {"entrypoint": ["pnas-eval"], "installs": "[jobs]"},
    "jobs-ascend.Dockerfile": {"entrypoint": ["pnas-eval"], "installs": "[jobs,ascend]"},
}


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfiles_build_a_non_root_image_without_secrets(name):
    steps = dockerfile(name)
    kinds = [k for k, _ in steps]
    assert kinds.count("FROM") == 1, "one stage, simple to read"
    assert all(k == "ARG" for k in kinds[: kinds.index("FROM")]), "only ARGs before FROM"
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1] == "1000:1000", "the last USER must be the numeric non-root 1000"
    entrypoints = [json.loads(args) for kind, args in steps if kind == "ENTRYPOINT"]
    assert entrypoints == [IMAGES[name]["entrypoint"]]
    assert any(IMAGES[name]["installs"] in args for kind, args in steps if kind == "RUN")
    for kind, args in steps:
        if kind in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\w*=", args, re.I), args
        assert not re.search(r"AKIA[0-9A-Z]{16}|minioadmin", args), args
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    assert "*" in ignore and {"!pyproject.toml", "!jobs/", "!operator/"} <= set(ignore), "an allowlist context"


def test_each_image_holds_what_it_runs():
    operator_runs = " ".join(args for kind, args in dockerfile("operator.Dockerfile") if kind == "RUN")
    assert "python:3.11-slim" in dict(dockerfile("operator.Dockerfile"))["FROM"]
    assert "torch" not in operator_runs and "onnx" not in operator_runs
    jobs = dockerfile("jobs.Dockerfile")
    assert dict(jobs)["FROM"] == "python:3.11-slim"
    assert ("ARG", "ONNXRUNTIME=onnxruntime-gpu") in jobs
    ascend = dockerfile("jobs-ascend.Dockerfile")
    args = [a for kind, a in ascend if kind == "ARG"]
    assert (
        ascend[0][0] == "ARG"
        and ascend[0][1].startswith("CANN_BASE_IMAGE=")
        and len(ascend[0][1]) > len("CANN_BASE_IMAGE=")
    )
    assert dict(ascend)["FROM"] == "${CANN_BASE_IMAGE}"
    assert {"AIS_BENCH_WHEEL", "ACLRUNTIME_WHEEL"} <= {a.split("=")[0] for a in args}
    # The Jobs' `command: [pnas-eval, ...]` bypasses ENTRYPOINT: `pnas-eval` itself must set up CANN
    wrapper = (DOCKER / "ascend-env.sh").read_text()
    assert "set_env.sh" in wrapper and 'exec python3 -m pnas_jobs "$@"' in wrapper
    assert ("ENV", "PATH=/opt/pnas-eval/bin:${PATH}") in ascend
    assert "!docker/ascend-env.sh" in (DOCKER / "jobs-ascend.Dockerfile.dockerignore").read_text().splitlines()
    subprocess.run(["bash", "-n", str(DOCKER / "ascend-env.sh")], check=True)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"pnas-operator", "pnas-eval"} <= set(scripts)


def test_the_operator_image_needs_no_stage_dependency():
    """`pip install .[operator]` has no torch, onnx, numpy or minio: the operator must not import them."""
    heavy = ["torch", "torchvision", "timm", "onnx", "onnxsim", "onnxruntime", "numpy", "PIL", "minio", "tqdm"]
    code = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in heavy)
    code += "import pnas_operator.main, pnas_operator.handlers, pnas_operator.reconcile\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_and_values_document_the_crd_upgrade():
    for path in (CHART / "README.md", CHART / "values.yaml"):
        text = path.read_text()
        assert "never upgrades" in text and "kubectl apply --server-side -f" in text, path
