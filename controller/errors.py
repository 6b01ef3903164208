"""Every error Sandgate raises on purpose.

::

    SandgateError                 root; ``code`` is stable, ``diagnostics()`` says what to do
    ├── ConfigError               settings, profiles or bundles that cannot be loaded
    │   ├── ProfileError
    │   └── PolicyBundleError
    ├── InputError                a submission that cannot be accepted as given
    ├── IllegalTransitionError    the lifecycle refused a move (a bug, never user input)
    ├── RuntimeUnavailableError   the container engine cannot be reached or failed
    ├── WorkspaceError
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
        return f"{self} ({self.code}). {self.hint}"


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


class IllegalTransitionError(SandgateError):
    code = "illegal_transition"
    hint = "This is a Sandgate bug: the lifecycle refused a move. Please report it."


class RuntimeUnavailableError(SandgateError):
    code = "runtime_unavailable"
    hint = "Check that the Docker engine answers (`docker info`) and the sandbox image exists."


class WorkspaceError(SandgateError):
    code = "workspace_error"
    hint = "Check the data directory's permissions and free space."


class CommitConflictError(WorkspaceError):
    code = "conflict"
    hint = "Another submission committed to the workspace first; resubmit against the new version."


class StoreError(SandgateError):
    code = "store_error"
    hint = "Check the data directory's free space and permissions."


class SigningError(SandgateError):
    code = "signing_unavailable"
    hint = "Check the key files in the data directory (mode 0600, readable by the controller)."
