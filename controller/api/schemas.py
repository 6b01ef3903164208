"""Response bodies of the API (what /openapi.json describes). The request body of a
submission is the core's ``SubmissionBody``: its constraints are written there, once."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from controller.adapters.signing import KeyStatus
from controller.api import examples
from controller.core.models import (
    Decision,
    DiffSummary,
    FileChange,
    Language,
    Limit,
    Observation,
    Phase,
    Role,
    RuleMatch,
    State,
    Submission,
)
from controller.core.profile import Limits, Profile
from controller.core.radius import Divergence, Radius
from controller.core.records import RequestPreview, SubmissionSummary
from controller.service.pool import PoolState

# The dry run's changes the approvals queue shows; the rest is a route away.
APPROVAL_CHANGES = 20
# What a response always carries is required in the schema (defaults included).
VIEW = ConfigDict(json_schema_serialization_defaults_required=True)


def _examples(*found: dict[str, Any]) -> ConfigDict:
    return ConfigDict(json_schema_serialization_defaults_required=True,
                      json_schema_extra={"examples": list(found)})


JsonInt = Annotated[int | str, Field(description=(
    "An integer; a decimal string when outside ±(2^53 - 1), the range RFC 8785 JSON holds "
    "exactly (sizes a sandbox chose)"))]


class RunResult(Observation):
    """One run as seen from outside the container, the limits it hit and its diff's counts
    (what the receipt signs of it)."""

    model_config = VIEW

    diff: DiffSummary | None = Field(None, description="The workspace's changes, counted")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def limits_hit(self) -> tuple[Limit, ...]:
        return super().limits_hit

    @classmethod
    def of(cls, run: Observation | None, diff: DiffSummary | None) -> RunResult | None:
        return None if run is None else cls(**dict(run), diff=diff)


class Change(FileChange):
    """One path a run created, modified or deleted."""

    model_config = VIEW

    size: JsonInt = 0  # type: ignore[assignment]
    mode: JsonInt = 0  # type: ignore[assignment]


class Links(BaseModel):
    model_config = VIEW

    self: str
    events: str
    receipt: str
    diff: str
    stdout: str
    stderr: str
    code: str


class RadiusView(Radius):
    """What the dry run did: the bound on the real run, and the digest an approval cites."""

    sha256: str

    @classmethod
    def of(cls, radius: Radius | None) -> RadiusView | None:
        return None if radius is None else cls(**radius.model_dump(), sha256=radius.digest)


class DivergenceView(BaseModel):
    """How far the real run went beyond its radius (``diverged`` false: not at all)."""

    model_config = VIEW

    diverged: bool
    outside_paths: int = Field(description="Paths written, deleted or changed in type or "
                                           "mode that the dry run left alone")
    found: Divergence

    @classmethod
    def of(cls, divergence: Divergence | None) -> DivergenceView | None:
        if divergence is None:
            return None
        return cls(diverged=divergence.diverged, outside_paths=divergence.outside_paths,
                   found=divergence)


class SubmissionView(BaseModel):
    """A submission: its state and why, the decisions taken, what each run did, previews
    of the last run's output, the workspace versions, and where to read the rest."""

    model_config = _examples(examples.SUBMISSION)

    id: str
    trace_id: str = Field(description=(
        "The submission's trace (its receipt's too): the traceparent's, if the request "
        "carried one"))
    state: State
    reason: str
    agent: str
    language: Language
    workspace: str
    profile: str
    created_at: datetime
    updated_at: datetime
    decisions: list[Decision]
    dry_run: RunResult | None
    bounded_run: RunResult | None
    radius: RadiusView | None = Field(None, description=(
        "What the dry run did (set at assessment): what an approver approves"))
    divergence: DivergenceView | None = Field(None, description=(
        "How far the real run went beyond the radius (after the real run)"))
    violations: list[str]
    stdout: str = Field(description="The first 16 KiB of the last run's stdout, decoded "
                                    "(the bytes: links.stdout)")
    stderr: str
    version_before: int | None
    version_after: int | None
    receipt_seq: int | None
    links: Links


class SubmissionPage(BaseModel):
    model_config = VIEW

    submissions: list[SubmissionSummary]
    next_cursor: str | None = Field(description="Pass back as cursor for the next page")


class DiffPage(BaseModel):
    """One run's changes, a page at a time in path order; ``summary.changes_sha256`` is the
    digest of the whole list (RFC 8785 JSON array of every page's changes)."""

    model_config = VIEW

    phase: Phase
    summary: DiffSummary | None
    changes: list[Change]
    next_cursor: int | None


class Signature(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)

    keyid: str = Field(description="The signing key's id, as GET /v1/keys lists it")
    sig: str = Field(description="Base64 Ed25519 signature over the DSSE pre-authentication "
                                 "encoding of payloadType and payload")


class Envelope(BaseModel):
    """A DSSE envelope: a receipt (payloadType ``application/vnd.in-toto+json``, an in-toto
    Statement), a key rotation record or a checkpoint; ``sandgate-verify`` checks it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True,
                              json_schema_serialization_defaults_required=True,
                              json_schema_extra={"examples": [examples.ENVELOPE]})

    payload_type: str = Field(alias="payloadType")
    payload: str = Field(description="Base64 of the signed bytes (canonical JSON)")
    signatures: list[Signature]


class ReceiptPage(BaseModel):
    model_config = VIEW

    receipts: list[Envelope]
    next_since_seq: int | None = Field(description="Pass back as since_seq for the next page")


class KeyView(BaseModel):
    model_config = _examples(examples.KEY)

    key_id: str
    pem: str
    created: datetime
    status: KeyStatus


class WorkspaceView(BaseModel):
    model_config = _examples({"name": "default", "version": 2, "versions": [0, 1, 2]})

    name: str
    version: int = Field(description="The current version")
    versions: list[int] = Field(description="The versions whose files can be read")


class PoolView(BaseModel):
    """A profile's pools of started sandboxes (pairs: a dry run's and a real run's)."""

    model_config = VIEW

    min: int = Field(description="Pairs kept ready per language (0 with max 0: no pool)")
    max: int = Field(description="The most a pool grows to after misses")
    target: int = Field(description="Pairs the refill keeps ready now (per language)")
    ready: int = Field(description="Pairs waiting now, every language together")
    hits: int = Field(description="Submissions that found a pair ready")
    misses: int = Field(description="Submissions that found none and started their own")
    replaced: int = Field(description="Pairs removed unused: idle past ttl_s, or stale")
    failed_starts: int = Field(description="Pairs that could not be started")


class ProfileView(BaseModel):
    model_config = VIEW

    name: str
    description: str
    image: str
    digest: str
    network: bool
    limits: Limits
    tripwires: list[str]
    pool: PoolView | None = Field(None, description=(
        "Its pools, if this server keeps any (shown to admins and auditors)"))


class BundleView(BaseModel):
    model_config = VIEW

    name: str
    version: str
    digest: str
    description: str


class PolicyView(BundleView):
    shadow: BundleView | None = None
    shadow_decisions: int = 0
    shadow_disagreements: int = 0


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"approve": True, "reason": "reviewed: writes one report file"}]})

    approve: bool
    reason: str = Field(min_length=1, max_length=2000)


class ApprovalRequest(BaseModel):
    """What an approver needs to decide: the code, what its dry run did, and why it waits.
    Bounded: the code and lists are cut (the ``links`` of the submission lead to the rest)."""

    model_config = VIEW

    submission: SubmissionView
    code: str
    code_truncated: bool
    files: list[str]
    files_count: int
    dry_run_diff: DiffSummary | None
    dry_run_changes: list[Change]
    waiting_because: list[RuleMatch]


class TransitionEvent(BaseModel):
    """The ``data`` of a ``transition`` event of GET /v1/submissions/{id}/events."""

    model_config = ConfigDict(populate_by_name=True, json_schema_extra={"examples": [
        {"from": "validating", "to": "committing", "at": "2025-06-01T12:00:01.204518+00:00"}]})

    source: State | None = Field(alias="from", description="None for the first event")
    to: State
    at: datetime


class Health(BaseModel):
    model_config = VIEW

    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    model_config = _examples({"ready": True, "checks": {
        "docker": "ok", "store": "ok", "signing_key": "ok", "policy_bundle": "ok",
        "accepting": "ok", "kernel_audit": "ok"}})

    ready: bool
    checks: dict[str, str] = Field(description='Each check: "ok", or what is wrong')


class PrincipalView(BaseModel):
    """Who the API key is: its principal's name, role and what it reads (GET /v1/events and
    the listings follow the same rules)."""

    model_config = _examples(examples.PRINCIPAL)

    principal: str
    role: Role
    sees: Literal["own", "parked", "all"] = Field(description=(
        "own: the caller's submissions; parked: every submission from its parking for "
        "approval on; all: every submission"))


class QueueView(BaseModel):
    """The run queue now: shared by every principal, each within its share."""

    model_config = VIEW

    waiting: int = Field(description="Submissions admitted and waiting for a worker")
    running: int = Field(description="Submissions a worker drives now")
    workers: int = Field(description="Submissions that can run at once")
    capacity: int = Field(description="Places in all, workers included: past it, new work "
                                      "is refused (503)")
    principals: int = Field(description="Principals holding a place now")


class StatusView(BaseModel):
    """How the service is doing now, for admins and auditors (every tenant's activity)."""

    model_config = _examples(examples.STATUS)

    queue: QueueView
    draining: bool = Field(description="Shutting down: new work is refused")


class LintFinding(BaseModel):
    model_config = VIEW

    level: Literal["error", "warning"] = Field(description=(
        "error: sandgate profiles lint fails on it; warning: it does not"))
    where: str = Field(description="The profile file (and its seccomp file)")
    message: str


class ProfileLint(BaseModel):
    """What ``sandgate profiles lint`` finds in one profile file of the profiles directory,
    and whether that file is the profile running now."""

    model_config = _examples(examples.PROFILE_LINT)

    file: str = Field(description="The file's name in the profiles directory")
    profile: str | None = Field(description="The profile's name (None: the file does not "
                                            "load; its one finding says why)")
    digest: str | None
    loaded: bool = Field(description=(
        "The file is the profile in use (same name and digest); false: new, changed or "
        "broken since the last load, so a reload would take it (or refuse them all)"))
    findings: list[LintFinding]


def approval_request(sub: Submission, request: RequestPreview | None,
                     changes: list[dict[str, Any]]) -> ApprovalRequest:
    """``sub`` at a glance, what ``request`` shows of its code and files, and the first of
    the dry run's ``changes`` (all read from the store without loading the request whole)."""
    waiting = [d for d in sub.decisions if d.outcome.value == "REQUIRE_APPROVAL"]
    shown = request or RequestPreview(code="", code_chars=0, files=(), files_count=0)
    return ApprovalRequest(
        submission=submission_view(sub), code=shown.code,
        code_truncated=shown.code_chars > len(shown.code), files=list(shown.files),
        files_count=shown.files_count, dry_run_diff=sub.dry_run_diff,
        dry_run_changes=[Change.model_validate(change) for change in changes],
        waiting_because=[rule for d in waiting for rule in d.rules])


def profile_view(profile: Profile, pool: PoolState | None) -> ProfileView:
    """A profile as loaded, with its pools' state where the server keeps any."""
    return ProfileView(name=profile.name, description=profile.description,
                       image=profile.image, digest=profile.digest, network=profile.network,
                       limits=profile.limits, tripwires=list(profile.tripwires),
                       pool=None if pool is None or pool.max == 0 else PoolView(
                           **dataclasses.asdict(pool)))


def bundle_view(bundle: Any) -> BundleView:
    return BundleView(name=bundle.name, version=bundle.version, digest=bundle.digest,
                      description=bundle.description)


def links(submission_id: str) -> Links:
    base = f"/v1/submissions/{submission_id}"
    return Links(self=base, events=f"{base}/events", receipt=f"/v1/receipts/{submission_id}",
                 diff=f"{base}/diff", stdout=f"{base}/outputs/stdout",
                 stderr=f"{base}/outputs/stderr", code=f"{base}/code")


def submission_view(sub: Submission) -> SubmissionView:
    request = sub.request
    return SubmissionView(
        id=sub.id, trace_id=sub.trace_id, state=sub.state, reason=sub.reason, agent=request.agent,
        language=request.language, workspace=request.workspace, profile=request.profile,
        created_at=sub.created_at, updated_at=sub.updated_at, decisions=list(sub.decisions),
        dry_run=RunResult.of(sub.dry_run, sub.dry_run_diff),
        bounded_run=RunResult.of(sub.bounded_run, sub.bounded_run_diff),
        radius=RadiusView.of(sub.radius), divergence=DivergenceView.of(sub.divergence),
        violations=list(sub.violations), stdout=sub.stdout, stderr=sub.stderr,
        version_before=sub.base_version, version_after=sub.new_version,
        receipt_seq=sub.receipt_seq, links=links(sub.id))
