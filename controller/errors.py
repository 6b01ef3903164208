"""Every error Sandgate raises on purpose.

::

    SandgateError                 root; ``code`` is stable, ``diagnostics()`` says what to do
    ├── ConfigError               settings, profiles or bundles that cannot be loaded
    │   ├── ProfileError
    │   └── PolicyBundleError
    ├── InputError                a submission that cannot be accepted as given
    │   └── IdempotencyConflictError  same Idempotency-Key, different body
    ├── NotFoundError             no such record, or not yours (never says which)
    ├── AuthError                 no or bad credentials
    ├── ForbiddenError            credentials fine, role not allowed
    ├── RetryableError            refused for now, with a Retry-After
    │   ├── RateLimitedError      too many requests from one principal
    │   ├── OverloadedError       the run queue is full
    │   └── UnavailableError      draining or not ready
    ├── IllegalTransitionError    the lifecycle refused a move (a bug, never user input)
    ├── RuntimeUnavailableError   the container engine cannot be reached or failed
    │   ├── KilledFromOutsideError  a kill Sandgate did not issue (``core.ports``: it carries
    │   │                             the run's ``Observation``)
    │   └── ContainerAuditError   a container failed the CIS configuration audit
    ├── WorkspaceError            the data directory or a run copy cannot be read or written
    │   ├── TreeTooDeepError      a run left paths too long to walk safely
    │   ├── TreeChangedError      the staged tree is not the validated one
    │   └── CommitConflictError   another commit moved the workspace first
    ├── StoreError                the SQLite store refused a write
    └── SigningError              no usable signing key
"""

from __future__ import annotations


class SandgateError(Exception):
    """Root of every deliberate Sandgate error."""

    code = "sandgate_error"
    hint = "See the message above; report it if it looks like a Sandgate bug."

    def diagnostics(self) -> str:
        """A message a person can act on: what happened and what to do next."""
        return f"{str(self).rstrip('.')} ({self.code}). {self.hint}"


class ConfigError(SandgateError):
    code = "config_invalid"
    hint = "Fix the named file or setting and try again."


class ProfileError(ConfigError):
    code = "profile_invalid"
    hint = "Fix the profile file named above; `sandgate profiles` lists the loaded ones."


class PolicyBundleError(ConfigError):
    code = "policy_bundle_invalid"
    hint = "Fix the bundle file and policy named above; the previously active bundle stays."


class InputError(SandgateError):
    code = "invalid_input"
    hint = "Change the submission as the message says; nothing was accepted."


class IdempotencyConflictError(InputError):
    code = "idempotency_conflict"
    hint = "Use a new Idempotency-Key for a different submission."


class NotFoundError(SandgateError):
    code = "not_found"
    hint = "Check the id or name; records of other principals are not visible."


class AuthError(SandgateError):
    code = "unauthenticated"
    hint = "Send 'Authorization: Bearer <key>' with a key from `sandgate principals add`."


class ForbiddenError(SandgateError):
    code = "forbidden"
    hint = "This route needs another role; ask an admin."


class RetryableError(SandgateError):
    """Refused for now; ``retry_after`` seconds is a fair wait before trying again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    code = "rate_limited"
    hint = "Slow down: wait Retry-After seconds."


class OverloadedError(RetryableError):
    code = "overloaded"
    hint = "The run queue is full: wait Retry-After seconds and submit again."


class UnavailableError(RetryableError):
    code = "unavailable"
    hint = "The controller is starting, draining or not ready; see /readyz."


class DataDirInUseError(UnavailableError):
    code = "data_dir_in_use"
    hint = ("Stop the service using it, or point SANDGATE_DATA_DIR elsewhere; while a service "
            "runs, submit through its API.")


class IllegalTransitionError(SandgateError):
    code = "illegal_transition"
    hint = "This is a Sandgate bug: the lifecycle refused a move. Please report it."


class RuntimeUnavailableError(SandgateError):
    code = "runtime_unavailable"
    hint = "Check that the Docker engine answers (`docker info`) and the sandbox image exists."


class ContainerAuditError(RuntimeUnavailableError):
    code = "container_audit_failed"
    hint = "A profile or runtime change weakened the container; it was not started."


class SandboxGoneError(RuntimeUnavailableError):
    """A started sandbox stopped before its gate opened: none of the code ran in it."""

    code = "sandbox_gone"
    hint = "The engine stopped a waiting sandbox (a restart, say); a new one is started."


class WorkspaceError(SandgateError):
    code = "workspace_error"
    hint = "Check the data directory's permissions and free space."


class TreeTooDeepError(WorkspaceError):
    """A run left paths too long to walk safely: the tree cannot be validated."""

    code = "workspace_too_deep"
    hint = "Keep workspace paths under 3,000 bytes."


class TreeChangedError(WorkspaceError):
    """The tree staged for a commit is not the tree that was validated."""

    code = "workspace_changed"
    hint = "Something wrote to the run copy after validation; see the quarantine evidence."


class CommitConflictError(WorkspaceError):
    code = "conflict"
    hint = "Another submission committed to the workspace first; resubmit against the new version."


class StoreError(SandgateError):
    code = "store_error"
    hint = "Check the data directory's free space and permissions."


class SigningError(SandgateError):
    code = "signing_unavailable"
    hint = "Check the key files in the data directory (mode 0600, readable by the controller)."
