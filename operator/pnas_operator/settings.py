"""Operator settings, from environment variables prefixed `PNAS_OPERATOR_` (the chart sets them):
every field of the Jobs' settings (manifests.JobSettings) plus the operator's own."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pnas_operator.manifests import JobSettings


ENV_PREFIX = "PNAS_OPERATOR_"


class OperatorSettings(JobSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # The watches wake a PnasEval's pass as soon as one of its Jobs or pods changes; these bound the rest.
    resync_interval: float = Field(120.0, gt=0, description="seconds between safety-net passes (they list the Jobs)")
    api_timeout: float = Field(30.0, gt=0, description="seconds an API call may take to answer")
    api_connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to the API server")
    backoff_min: float = Field(
        1.0, gt=0, description="first wait after a failed pass or status write, doubled each time"
    )
    backoff_max: float = Field(60.0, gt=0, description="longest wait between retries")
    event_interval: float = Field(
        300.0, ge=0, description="an Event with the same reason and message is posted at most this often"
    )
    start_check_seconds: float = Field(10.0, gt=0, description="a stage's Job without pods this long: look for why")
    summary_grace_seconds: float = Field(
        30.0, gt=0, description="the summary's pod may show up this late after its Job"
    )
    probe_port: int = Field(8081, ge=1, le=65535, description="port of /metrics and /readyz")

    def job_settings(self) -> JobSettings:
        return JobSettings.model_validate(self.model_dump(include=set(JobSettings.model_fields)))
