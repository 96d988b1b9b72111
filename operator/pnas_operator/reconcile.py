"""One reconciliation pass over a PnasEval, as a plain function (kopf only calls it).

The story: skip finished evaluations; read the spec; plan; list the Jobs that exist; derive the
status; create the Jobs whose turn has come; return one status to write and the Events to post.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from pydantic import ValidationError

from pnas_jobs import status as status_model
from pnas_jobs.plan import Plan, cluster_plan
from pnas_jobs.report import Summary
from pnas_jobs.spec import PnasEval, SpecError, parse_manifest
from pnas_jobs.status import TERMINAL
from pnas_operator import kube, manifests, state
from pnas_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owner(body: dict) -> manifests.Owner:
    meta = body["metadata"]
    return manifests.Owner(meta["name"], meta.get("namespace", "default"), meta.get("uid", ""))


def rejected(body: dict, message: str, when: str, reason: str) -> state.Outcome:
    """Failed for good: what the spec asks for cannot run, and passing again would not change that."""
    failed = status_model.failed(body.get("status"), reason, message, when, body["metadata"].get("generation"))
    return state.Outcome(failed, events=[("Warning", reason, message)])


def plan_of(body: dict) -> tuple[PnasEval, Plan]:
    source = f"PnasEval {body['metadata'].get('namespace')}/{body['metadata']['name']}"
    pnaseval = parse_manifest(
        {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": body["metadata"], "spec": body.get("spec")},
        source,
    )
    return pnaseval, cluster_plan(pnaseval, source, summary_file=manifests.TERMINATION_LOG)


def reconcile(body: dict, settings: OperatorSettings, when: str | None = None) -> state.Outcome | None:
    when = when or now()
    previous = dict(body.get("status") or {})
    if previous.get("phase") in TERMINAL:
        return None
    try:
        pnaseval, plan = plan_of(body)
    except SpecError as error:
        return rejected(body, "invalid spec: " + "; ".join(error.problems), when, "InvalidSpec")
    owner = _owner(body)
    jobs = [job for job in kube.list_jobs(owner.namespace, owner.name) if manifests.owned_by(job, owner)]
    outcome = state.derive(plan, jobs, previous, when, body["metadata"].get("generation"), _summary(plan, jobs, owner))
    job_settings = settings.job_settings()
    for step in outcome.create:
        job = manifests.job_for_step(plan, step, pnaseval.spec, owner, job_settings)
        name = job["metadata"]["name"]
        try:
            if kube.create_job(job):
                log.info("created Job %s/%s", owner.namespace, name)
        except kube.JobRejected as error:
            return rejected(body, f"the API server refused Job {name} ({step.name}): {error}", when, "JobRejected")
    return outcome


def _summary(plan: Plan, jobs: list[dict], owner: manifests.Owner) -> Summary | None:
    """The run's summary, once the step that writes it succeeded: its pod's termination message."""
    step = plan.summary_step.name
    job = next((j for j in jobs if j["metadata"]["labels"].get(manifests.STEP_LABEL) == step), None)
    if job is None or state.view(job).phase != state.StagePhase.SUCCEEDED:
        return None
    message = kube.termination_message(owner.namespace, job["metadata"]["name"])
    if not message:
        return None
    try:
        return Summary.model_validate_json(message)
    except ValidationError:
        log.warning("%s left an unreadable summary: %.200s", step, message)
        return None


def cleanup(body: dict, settings: OperatorSettings) -> str | None:
    """On deletion with `spec.cleanup`: start the Job that deletes the run's objects in storage."""
    try:
        pnaseval, plan = plan_of(body)
    except SpecError:
        return None
    job = manifests.cleanup_job(plan, pnaseval.spec, _owner(body), settings.job_settings())
    kube.create_job(job)
    return job["metadata"]["name"]
