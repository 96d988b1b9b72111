"""One reconciliation pass over a PnasEval, as a plain function (kopf only calls it).

The story: skip finished evaluations; read the spec; plan; list the Jobs that exist; derive the
status; create the Jobs whose turn has come; return one status to write and the Events to post.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from pnas_jobs import layout
from pnas_jobs.plan import cluster_plan
from pnas_jobs.spec import SpecError, parse_manifest
from pnas_jobs.status import TERMINAL
from pnas_operator import kube, manifests, state
from pnas_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner(body: dict) -> manifests.Owner:
    meta = body["metadata"]
    return manifests.Owner(meta["name"], meta.get("namespace", "default"), meta.get("uid", ""))


def invalid(body: dict, problems: list[str], when: str) -> state.Outcome:
    return rejected(body, "invalid spec: " + "; ".join(problems), when, "InvalidSpec")


def rejected(body: dict, message: str, when: str, reason: str = "JobRejected") -> state.Outcome:
    """Failed for good: what the spec asks for cannot run, and passing again would not change that."""
    generation = body["metadata"].get("generation")
    status = {
        "phase": "Failed",
        "message": message,
        "observedGeneration": generation,
        "completionTime": when,
        "conditions": [state.condition({}, "Ready", False, reason, message, when, generation)],
    }
    return state.Outcome(status, events=[("Warning", reason, message)])


def plan_of(body: dict):
    source = f"PnasEval {body['metadata'].get('namespace')}/{body['metadata']['name']}"
    manifest = parse_manifest(
        {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": body["metadata"], "spec": body.get("spec")},
        source,
    )
    return manifest, cluster_plan(manifest, source)


def reconcile(body: dict, settings: OperatorSettings, when: str | None = None) -> state.Outcome | None:
    when = when or now()
    previous = dict(body.get("status") or {})
    if previous.get("phase") in TERMINAL:
        return None
    try:
        manifest, plan = plan_of(body)
    except SpecError as error:
        return invalid(body, error.problems, when)
    owner = _owner(body)
    jobs = [job for job in kube.list_jobs(owner.namespace, owner.name) if manifests.owned_by(job, owner)]
    summary = None
    aggregate = next((j for j in jobs if j["metadata"]["labels"].get(manifests.STEP_LABEL) == "aggregate"), None)
    if aggregate is not None and state.view(aggregate).phase == state.SUCCEEDED:
        message = kube.termination_message(owner.namespace, aggregate["metadata"]["name"])
        summary = _summary(message, plan.root)
    outcome = state.derive(plan, jobs, previous, when, body["metadata"].get("generation"), summary)
    job_settings = settings.job_settings()
    for step in outcome.create:
        manifest_ = manifests.job_for_step(plan, step, manifest.spec, owner, job_settings)
        name = manifest_["metadata"]["name"]
        try:
            if kube.create_job(manifest_):
                log.info("created Job %s/%s", owner.namespace, name)
        except kube.JobRejected as error:
            return rejected(body, f"the API server refused Job {name} ({step.name}): {error}", when)
    return outcome


def _summary(message: str | None, root: str) -> dict | None:
    """The aggregate's termination message, with each result's accuracy JSON URI under the run's root."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        log.warning("aggregate left an unreadable summary: %.200s", message)
        return None
    if not (isinstance(data, dict) and isinstance(data.get("results"), list)):
        return None
    for result in data["results"]:
        result["json"] = f"{root}/{layout.accuracy_json(result['batchSize'])}"
    return data


def cleanup(body: dict, settings: OperatorSettings) -> str | None:
    """On deletion with `spec.cleanup`: start the Job that deletes the run's objects in storage."""
    try:
        manifest, plan = plan_of(body)
    except SpecError:
        return None
    job = manifests.cleanup_job(plan, manifest.spec, _owner(body), settings.job_settings())
    kube.create_job(job)
    return job["metadata"]["name"]
