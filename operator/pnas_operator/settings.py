"""Operator settings, from environment variables prefixed `PNAS_OPERATOR_` (the chart sets them)."""
from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pnas_operator.manifests import JobSettings


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PNAS_OPERATOR_", extra="ignore")

    jobs_image: str = "ghcr.io/pnas-eval/jobs:0.1.0"
    ascend_image: str = "ghcr.io/pnas-eval/jobs-ascend:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    jobs_service_account: str | None = "pnas-eval-jobs"
    job_ttl_seconds: int | None = Field(86400, ge=0, description="ttlSecondsAfterFinished of finished Jobs")
    backoff_limit: int = Field(2, ge=0)
    backoff_limit_per_index: int = Field(2, ge=0)
    ascend_driver_path: str = Field("/usr/local/Ascend/driver", description="empty: do not mount (the runtime does)")
    scratch_size: str = "20Gi"
    run_as_user: int = 1000
    run_as_group: int = 1000
    cpu_request: str = "1"
    memory_request: str = "4Gi"
    memory_limit: str = "16Gi"
    reconcile_interval: float = Field(10.0, gt=0, description="seconds between passes over a running PnasEval")

    @field_validator("job_ttl_seconds", "jobs_service_account", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        # an empty variable means "none": keep finished Jobs forever, or use the namespace's default account
        return None if value == "" else value

    def job_settings(self) -> JobSettings:
        return JobSettings(
            jobs_image=self.jobs_image,
            ascend_image=self.ascend_image,
            image_pull_policy=self.image_pull_policy,
            service_account=self.jobs_service_account or None,
            ttl_seconds_after_finished=self.job_ttl_seconds,
            backoff_limit=self.backoff_limit,
            backoff_limit_per_index=self.backoff_limit_per_index,
            ascend_driver_path=self.ascend_driver_path,
            scratch_size=self.scratch_size,
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            cpu_request=self.cpu_request,
            memory_request=self.memory_request,
            memory_limit=self.memory_limit,
        )
