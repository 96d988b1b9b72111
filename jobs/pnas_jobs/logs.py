"""Logging for the stages: one line per event, and no secret ever printed.

Storage errors are written without credentials in the first place; the filter here is the belt to
those braces: any credential value from the environment is masked in every log record.
"""

from __future__ import annotations

import logging
import os
import sys

from pnas_jobs.storage import ACCESS_KEY_ENV, SECRET_KEY_ENV

MASK = "****"


def secret_values() -> list[str]:
    values = [os.environ.get(name, "") for name in (*ACCESS_KEY_ENV, *SECRET_KEY_ENV)]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    for value in secrets if secrets is not None else secret_values():
        text = text.replace(value, MASK)
    return text


class RedactingFilter(logging.Filter):
    def __init__(self):
        super().__init__()
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = redact(record.getMessage(), self.secrets)
            record.args = None
        return True


def setup(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
