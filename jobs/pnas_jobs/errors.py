"""How a stage ends, as an exit code a Job's pod failure policy can act on.

0: done. 1: failed, worth retrying (a node, the network, storage). 2: the input is wrong; retrying
cannot help, so the Job fails at once (`podFailurePolicy` action FailJob on exit code 2).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RETRY = 1
EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input: the message says what is wrong and what to change. Exit code 2."""


class ParityError(UserError):
    """The converted model disagrees with PyTorch beyond the tolerance."""
