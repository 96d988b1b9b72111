"""Operator settings, from environment variables prefixed `PNAS_OPERATOR_` (the chart sets them):
every field of the Jobs' settings (manifests.JobSettings) plus the operator's own."""
from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pnas_operator.manifests import JobSettings


class OperatorSettings(JobSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PNAS_OPERATOR_", extra="ignore", frozen=True)

    reconcile_interval: float = Field(10.0, gt=0, description="seconds between passes over a running PnasEval")

    @field_validator("job_ttl_seconds", "jobs_service_account", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        # an empty variable means "none": keep finished Jobs forever, or use the namespace's default account
        return None if value == "" else value

    def job_settings(self) -> JobSettings:
        return JobSettings.model_validate(self.model_dump(include=set(JobSettings.model_fields)))
