"""Commands the operator package adds to `pnas-eval` (entry point group `pnas_eval.commands`)."""

from __future__ import annotations

import sys

from pydantic import Field
from pydantic_settings import CliPositionalArg

from pnas_jobs.cli import Command
from pnas_jobs.errors import EXIT_OK
from pnas_jobs.spec import DNS_LABEL
from pnas_operator.manifests import TERMINATION_LOG, JobSettings, Owner


class PlanCommand(Command):
    """Print the Job manifests the operator would create for a PnasEval."""

    spec: CliPositionalArg[str] = Field(..., description="PnasEval YAML")
    jobs_image: str = Field(JobSettings.model_fields["jobs_image"].default, description="image of the CPU/GPU stages")
    ascend_image: str = Field(
        JobSettings.model_fields["ascend_image"].default, description="image of the Ascend stages"
    )

    def execute(self) -> int:
        import yaml

        from pnas_jobs.plan import cluster_plan
        from pnas_jobs.spec import load_manifest
        from pnas_operator import manifests

        pnaseval = load_manifest(self.spec)
        plan = cluster_plan(pnaseval, f"{self.spec} (for a cluster)", summary_file=TERMINATION_LOG)
        settings = JobSettings(jobs_image=self.jobs_image, ascend_image=self.ascend_image)
        owner = Owner(name=pnaseval.metadata.name, namespace=pnaseval.metadata.namespace, uid="<uid>")
        yaml.safe_dump_all(manifests.jobs_for_plan(plan, pnaseval.spec, owner, settings), sys.stdout, sort_keys=False)
        return EXIT_OK


class DoctorCommand(Command):
    """Check, read-only, whether this cluster and storage can run a PnasEval, and how to fix what cannot."""

    spec: CliPositionalArg[str] = Field(..., description="PnasEval YAML")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL, description="where it will be applied (default: its metadata.namespace)"
    )
    storage_endpoint: str | None = Field(
        None, description="reach storage at this host:port from here (e.g. a port-forward)"
    )

    def execute(self) -> int:
        from pnas_jobs.plan import cluster_plan
        from pnas_jobs.preflight import exit_code
        from pnas_jobs.spec import load_manifest
        from pnas_operator import doctor

        pnaseval = load_manifest(self.spec)
        if self.namespace:
            pnaseval = pnaseval.model_copy(
                update={"metadata": pnaseval.metadata.model_copy(update={"namespace": self.namespace})}
            )
        plan = cluster_plan(pnaseval, f"{self.spec} (for a cluster)", summary_file=TERMINATION_LOG)
        findings = doctor.examine(pnaseval, plan, self.storage_endpoint)
        meta = pnaseval.metadata
        print(f"pnas-eval doctor: PnasEval {meta.namespace}/{meta.name}")
        for finding in findings:
            print(finding.line())
        print(f"=> {doctor.verdict(findings)}")
        return exit_code(findings)
