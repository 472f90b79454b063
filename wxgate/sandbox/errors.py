"""The sandbox's own exceptions, general to specific.

These are failures of the sandbox or of what it was asked to do; the errcode
answers of the simulated WeChat are not exceptions of ours (see `answers.Answer`).
"""

from __future__ import annotations


class SandboxError(Exception):
    """Anything the sandbox refuses or fails to do."""


class SandboxConfigError(SandboxError, ValueError):
    """An account file or a start-up option that cannot be used; the message says why."""


class ControlRequestError(SandboxError, ValueError):
    """A control request the sandbox cannot carry out as asked; the message says why."""


class FaultConfigError(ControlRequestError):
    """A fault setting that cannot be applied; the message names the field."""


class ControlError(SandboxError):
    """A control endpoint answered with an error (the message is its answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
