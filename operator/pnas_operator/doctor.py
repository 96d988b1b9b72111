"""`pnas-eval doctor`: whether this cluster and this storage can run a PnasEval, read-only.

The story: read the cluster (kube.py, the one door to the API), judge it (cluster_checks, pure),
check storage and data with the credentials of this shell (pnas_jobs.preflight), one Finding each.
The pod checks judge the Jobs as the running operator would build them (its settings from the env of
its Deployment), so a driver hostPath it was told to mount shows up against Pod Security.
"""

from __future__ import annotations

from pydantic import ValidationError

from pnas_jobs import crd, preflight
from pnas_jobs.plan import Plan
from pnas_jobs.preflight import Finding
from pnas_jobs.spec import API_GROUP, PLURAL, PnasEval
from pnas_jobs.storage import StorageSettings
from pnas_operator import cluster_checks, kube, manifests
from pnas_operator.settings import ENV_PREFIX


def operator_job_settings(operator: dict | None) -> manifests.JobSettings:
    """The Jobs' settings of a running operator, from the plain values of its Deployment's env."""
    containers = ((operator or {}).get("spec", {}).get("template", {}).get("spec") or {}).get("containers") or [{}]
    values = {
        field: e["value"]
        for e in containers[0].get("env") or []
        if e.get("name", "").startswith(ENV_PREFIX)
        and "value" in e
        and (field := e["name"].removeprefix(ENV_PREFIX).lower()) in manifests.JobSettings.model_fields
    }
    try:
        return manifests.JobSettings.model_validate(values)
    except ValidationError:
        return manifests.JobSettings()


def cluster(pnaseval: PnasEval, plan: Plan) -> list[Finding]:
    namespace = pnaseval.metadata.namespace
    try:
        snapshot = kube.cluster_snapshot(
            namespace, pnaseval.spec.storage.credentials_secret, f"{PLURAL}.{API_GROUP}", cluster_checks.OPERATOR_LABELS
        )
    except kube.ApiError as error:
        return [
            Finding(
                "Kubernetes API", "unreachable", str(error), "check KUBECONFIG / the current context, then run it again"
            )
        ]
    _, operator = cluster_checks.check_operator(snapshot, namespace)
    owner = manifests.Owner(pnaseval.metadata.name, namespace, "<uid>")
    jobs = manifests.jobs_for_plan(plan, pnaseval.spec, owner, operator_job_settings(operator))
    return cluster_checks.cluster_findings(snapshot, pnaseval, plan, jobs, crd.definition())


def storage(pnaseval: PnasEval, endpoint: str | None) -> list[Finding]:
    """Storage and data with this shell's credentials; `endpoint` reaches it from here (a port-forward)."""
    spec = pnaseval.spec.storage
    settings = StorageSettings.from_env(
        None, endpoint=endpoint or spec.endpoint, secure=spec.secure, region=spec.region, retries=1, backoff=0.2
    )
    return preflight.run_checks(pnaseval.spec, settings)


def examine(pnaseval: PnasEval, plan: Plan, endpoint: str | None = None) -> list[Finding]:
    return [*cluster(pnaseval, plan), *storage(pnaseval, endpoint)]


def verdict(findings: list[Finding]) -> str:
    problems = sum(f.level == "problem" for f in findings)
    code = preflight.exit_code(findings)
    if code == 0:
        warnings = sum(f.level == "warning" for f in findings)
        return "the run can start" + (f" ({warnings} warning{'s' * (warnings != 1)})" if warnings else "")
    if code == 2:
        return f"{problems} problem{'s' * (problems != 1)} to fix before the run can start"
    return "could not reach everything: run it again once it answers"
