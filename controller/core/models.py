"""Value objects of the core: submissions, observations, diffs, decisions.

Every model is an immutable pydantic model; a submission moves on by ``model_copy(update=…)``.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.core.frozen import Frozen
from controller.core.radius import Divergence, Radius


def utcnow() -> datetime:
    """The one clock for timestamps written into records and receipts."""
    return datetime.now(UTC)


class Language(StrEnum):
    PYTHON = "python"
    SH = "sh"


class State(StrEnum):
    RECEIVED = "received"
    DRY_RUN = "dry_run"
    ASSESSING = "assessing"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    VALIDATING = "validating"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    QUARANTINED = "quarantined"
    DENIED = "denied"


class Outcome(StrEnum):
    PERMIT = "PERMIT"
    DENY = "DENY"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    SILENCE = "SILENCE"


class Gate(StrEnum):
    """Where a decision is taken; the value is the policy action asked."""

    ADMISSION = "submit"
    ASSESSMENT = "run"
    UNATTENDED = "run_unattended"
    VALIDATION = "commit"


QUARANTINE_EFFECT = "quarantine"


class Phase(StrEnum):
    DRY_RUN = "dry_run"
    BOUNDED = "bounded"


class AuditSource(StrEnum):
    """Where the kernel's seccomp kill records were read during a run: the only witness of a
    child's tripwire (a parent may carry on and exit 0)."""

    NETLINK = "audit_netlink"  # the audit multicast group: every record, no rate limit
    KMSG = "kmsg"  # /dev/kmsg: printk's rate limit may drop records (then: incomplete)
    NONE = "none"  # nothing readable: only the main process's own death is seen


class Limit(StrEnum):
    """Names of limits a run can hit; they appear in results and receipts as is."""

    WALL_TIME = "wall_time"
    MEMORY = "memory"
    PIDS = "pids"
    OUTPUT = "output"
    SECCOMP = "seccomp_tripwire"


WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
MAX_FILE_PATH = 255
MAX_CODE_CHARS = 1 << 20
MAX_FILES = 1000
MAX_FILE_CHARS = 1 << 20
MAX_LABELS = 32
MAX_LABEL_VALUE = 256
LOCAL_AGENT = "local"  # the agent of submissions made in process (``sandgate run``)

# What a record keeps of values the sandbox sizes; the rest is kept apart, fetched on demand.
OUTPUT_PREVIEW_BYTES = 16 << 10  # of stdout and of stderr, per run
MAX_REASON_CHARS = 2000
MAX_VIOLATIONS = 50
HAZARD_SAMPLE = 20


class Role(StrEnum):
    AGENT = "agent"
    APPROVER = "approver"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Principal(BaseModel):
    """An identity that holds an API key."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role
    created_at: datetime
    revoked: bool = False
    # Its own share of the run queue as read with it (None: the default applies).
    max_running: int | None = None
    max_queued: int | None = None

    @property
    def sees_everything(self) -> bool:
        """Admins and auditors read every tenant's records; agents only their own."""
        return self.role in (Role.ADMIN, Role.AUDITOR)


class SubmittedFile(Frozen):
    """A file placed in the workspace before the code runs."""

    path: Annotated[str, Field(min_length=1, max_length=MAX_FILE_PATH)]
    content: str = Field(max_length=MAX_FILE_CHARS,
                         description="File content; text, or base64 when encoding is base64")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    mode: Annotated[int, Field(ge=0, le=0o777)] = 0o644

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        parts = value.split("/")
        if (
            "\x00" in value
            or value.startswith("/")
            or any(part in ("", ".", "..") for part in parts)
        ):
            raise ValueError(
                f"file path {value!r} must be relative, without '.', '..', empty parts or NUL"
            )
        return value

    def data(self) -> bytes:
        """The file's bytes as they are written into the workspace."""
        if self.encoding == "base64":
            return base64.b64decode(self.content, validate=True)
        return self.content.encode()

    @model_validator(mode="after")
    def _decodable(self) -> SubmittedFile:
        if self.encoding == "base64":
            try:
                base64.b64decode(self.content.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error) as exc:
                raise ValueError(f"file {self.path!r}: content is not valid base64") from exc
        return self


class SubmissionBody(Frozen):
    """What a submitter writes: a request without who asks (the API's request body; each
    constraint is written here once)."""

    language: Language
    code: str = Field(max_length=MAX_CODE_CHARS, description="The code to run")
    files: tuple[SubmittedFile, ...] = Field(default=(), max_length=MAX_FILES, description=(
        "Files placed in the workspace before the code runs"))
    workspace: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern, description=(
        "The submitter's workspace to run in (made at version 0 if new)"))] = "default"
    profile: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern, description=(
        "A loaded profile's name (GET /v1/profiles)"))] = "standard"
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY.pattern)],
                 Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_LABELS, description="Recorded in the receipt",
        json_schema_extra={"propertyNames": {"pattern": LABEL_KEY.pattern}})

    def by(self, agent: str, trace_parent: TraceParent | None = None) -> SubmissionRequest:
        """This body as ``agent``'s request (the API's agent: the authenticated caller)."""
        return SubmissionRequest(**dict(self), agent=agent, trace_parent=trace_parent)


class TraceParent(Frozen):
    """The agent's span a submission continues (a W3C Trace Context ``traceparent``): the
    submission's trace id is its trace id."""

    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    sampled: bool = True


class SubmissionRequest(SubmissionBody):
    """What an agent asks for."""

    # A principal's name: it names the agent's workspace directory, so it has their shape.
    agent: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern)] = LOCAL_AGENT
    trace_parent: TraceParent | None = None


class StreamSummary(Frozen):
    size: int = Field(description="Bytes the program wrote (up to the kill at the cap)")
    sha256: str = Field(description="Digest of the captured bytes")
    truncated: bool = False


class Observation(Frozen):
    """What one run did, as seen from outside the container."""

    phase: Phase
    exit_code: int | None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    seccomp_killed: bool = False
    pids_limit_hit: bool = False
    peak_memory_bytes: int | None = None
    cpu_time_ns: int | None = None
    peak_pids: int | None = None
    loopback_packets: int | None = Field(None, description=(
        "Packets the run sent over its loopback interface, counted by its network namespace "
        "from before the code started"))
    wall_time_ms: float
    stdout: StreamSummary
    stderr: StreamSummary
    image_id: str
    container_changes: int | None = Field(
        None, description="Paths changed in the container's own layer (inspected only for "
                          "a real run that did not succeed: quarantine evidence)")
    audit_checks: int = Field(0, description="CIS configuration checks the container passed "
                                             "(inspected before it started; any failure stops it)")
    audit_source: AuditSource = Field(AuditSource.NONE, description=(
        "Where seccomp kill records were read: with none, a child's tripwire is unseen"))
    incomplete: str | None = Field(None, description=(
        "Why the observation may be missing events (kernel records lost or cut short); an "
        "incomplete observation never commits"))
    uid: int | None = Field(None, description="The uid (and gid) the run's processes had")

    @property
    def limits_hit(self) -> tuple[Limit, ...]:
        hits = [
            (self.timed_out, Limit.WALL_TIME),
            (self.oom_killed, Limit.MEMORY),
            (self.pids_limit_hit, Limit.PIDS),
            (self.stdout.truncated or self.stderr.truncated, Limit.OUTPUT),
            (self.seccomp_killed, Limit.SECCOMP),
        ]
        return tuple(limit for hit, limit in hits if hit)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.limits_hit


class ChangeKind(StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"


class EntryType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    DEVICE = "device"
    OTHER = "other"


class FileChange(Frozen):
    path: str
    kind: ChangeKind
    type: EntryType
    size: int = 0
    mode: int = 0
    sha256: str | None = None
    link_target: str | None = None


class Diff(Frozen):
    """A workspace's changes and the hazards among them."""

    changes: tuple[FileChange, ...] = ()
    setuid_files: tuple[str, ...] = ()
    device_nodes: tuple[str, ...] = ()
    escaping_symlinks: tuple[str, ...] = ()
    hardlinks: tuple[str, ...] = ()
    special_files: tuple[str, ...] = ()
    size_after: int = 0
    files_after: int = 0

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for change in self.changes if change.kind is kind)

    def summary(self, changes_sha256: str) -> DiffSummary:
        """What records, receipts and policy contexts carry: counts, a sample of the hazards,
        and the digest of the full change list (kept apart, fetched a page at a time)."""
        hazards = (*self.setuid_files, *self.device_nodes, *self.escaping_symlinks,
                   *self.special_files, *self.hardlinks)
        return DiffSummary(
            created=self.count(ChangeKind.CREATED), modified=self.count(ChangeKind.MODIFIED),
            deleted=self.count(ChangeKind.DELETED), setuid_files=len(self.setuid_files),
            device_nodes=len(self.device_nodes), escaping_symlinks=len(self.escaping_symlinks),
            hardlinks=len(self.hardlinks), special_files=len(self.special_files),
            size_after=self.size_after, files_after=self.files_after,
            changes_sha256=changes_sha256, hazard_sample=tuple(sorted(hazards)[:HAZARD_SAMPLE]))


class DiffSummary(Frozen):
    """A workspace diff as a record keeps it: bounded whatever the sandbox did."""

    created: int = 0
    modified: int = 0
    deleted: int = 0
    setuid_files: int = 0
    device_nodes: int = 0
    escaping_symlinks: int = 0
    hardlinks: int = 0
    special_files: int = 0
    size_after: int = 0
    files_after: int = 0
    changes_sha256: str = Field(description=(
        "sha256 of the RFC 8785 JSON array of every change, in path order: what the "
        "paginated diff route serves"))
    hazard_sample: tuple[str, ...] = Field((), description=(
        f"Up to {HAZARD_SAMPLE} hazardous paths (setuid, devices, escaping links, special "
        "files, hard links), by path"))

    @property
    def changed(self) -> int:
        return self.created + self.modified + self.deleted

    @property
    def hazardous(self) -> bool:
        """Whether the diff holds a hazard validation quarantines (hard links are allowed)."""
        return bool(self.setuid_files or self.device_nodes or self.escaping_symlinks
                    or self.special_files)

    def counts(self) -> dict[str, int]:
        """Counts only: what policy contexts carry."""
        return self.model_dump(exclude={"changes_sha256", "hazard_sample"})


class RuleMatch(Frozen):
    id: str
    reason: str = ""


class Decision(Frozen):
    gate: Gate
    outcome: Outcome
    rules: tuple[RuleMatch, ...] = ()
    errors: tuple[str, ...] = ()
    bundle_name: str | None = None
    bundle_version: str | None = None
    bundle_digest: str | None = None
    effect: str | None = Field(None, description="@effect of the determining forbid, if any")
    shadow: ShadowVerdict | None = None
    decided_at: datetime = Field(default_factory=utcnow)


class ShadowVerdict(Frozen):
    """What the shadow bundle would have decided: recorded, never enforced."""

    outcome: Outcome
    rules: tuple[RuleMatch, ...] = ()
    bundle_version: str | None = None
    bundle_digest: str | None = None
    disagrees: bool


class Approval(Frozen):
    approver: str
    approve: bool
    reason: str
    at: datetime = Field(default_factory=utcnow)
    radius_sha256: str | None = Field(None, description=(
        "The digest of the blast radius the approver was shown: what was approved"))


class EvidenceFile(Frozen):
    path: str = Field(description="Relative to the evidence directory (``untrusted.name`` form)")
    size: int
    sha256: str | None = Field(None, description="None for a file over the hashing budget")


class Evidence(Frozen):
    """What a quarantine kept aside, as a manifest: its digest binds every file."""

    manifest_sha256: str = Field(description="sha256 of manifest.json in the evidence directory")
    files: int
    bytes: int
    entries: tuple[EvidenceFile, ...] = Field(description="The first entries, by path")


MAX_EVIDENCE_ENTRIES = 50


class Submission(Frozen):
    """One submission's record: everything the lifecycle knows so far."""

    id: str
    trace_id: str
    request: SubmissionRequest
    code_sha256: str
    state: State = State.RECEIVED
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    reason: str = ""
    profile_digest: str | None = None
    image_id: str | None = None
    decisions: tuple[Decision, ...] = ()
    dry_run: Observation | None = None
    bounded_run: Observation | None = None
    dry_run_diff: DiffSummary | None = None
    bounded_run_diff: DiffSummary | None = None
    radius: Radius | None = Field(None, description=(
        "What the dry run did, set at assessment: the bound on the real run"))
    divergence: Divergence | None = Field(None, description=(
        "How far the real run went beyond the radius"))
    violations: tuple[str, ...] = Field((), description=(
        f"At most {MAX_VIOLATIONS}, the last one saying how many more there were"))
    base_version: int | None = None
    new_version: int | None = None
    base_tree_digest: str | None = None
    new_tree_digest: str | None = None
    stdout: str = Field("", description=(
        f"The first {OUTPUT_PREVIEW_BYTES} bytes of the last run's stdout, decoded; the whole "
        "of each run's output is kept apart"))
    stderr: str = ""
    evidence_dir: str | None = None
    evidence: Evidence | None = None
    approval: Approval | None = None
    receipt_seq: int | None = None
    sandbox_uid: int | None = Field(None, description=(
        "The uid both runs of this submission have, no other submission's while it is in "
        "flight"))


Decision.model_rebuild()
