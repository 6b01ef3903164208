"""Request and response bodies of the API (what /openapi.json describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from controller.core.models import (
    LABEL_KEY,
    MAX_CODE_CHARS,
    MAX_FILES,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    WORKSPACE_NAME,
    Decision,
    DiffSummary,
    Language,
    Submission,
    SubmittedFile,
)
from controller.core.receipts import observation_summary
from controller.core.records import RequestPreview, SubmissionSummary

# The dry run's changes the approvals queue shows; the rest is a route away.
APPROVAL_CHANGES = 20


class SubmitBody(BaseModel):
    """POST /v1/submissions: the agent is the authenticated principal, never the body."""

    model_config = ConfigDict(extra="forbid")

    language: Language
    code: str = Field(max_length=MAX_CODE_CHARS)
    files: list[SubmittedFile] = Field(default_factory=list, max_length=MAX_FILES)
    workspace: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern)] = "default"
    profile: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern)] = "standard"
    labels: dict[Annotated[str, Field(pattern=LABEL_KEY.pattern)],
                 Annotated[str, Field(max_length=MAX_LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=MAX_LABELS)


class Links(BaseModel):
    self: str
    events: str
    receipt: str
    diff: str
    stdout: str
    stderr: str
    code: str


class SubmissionView(BaseModel):
    id: str
    state: str
    reason: str
    agent: str
    language: str
    workspace: str
    profile: str
    created_at: datetime
    updated_at: datetime
    decisions: list[Decision]
    dry_run: dict[str, Any] | None
    bounded_run: dict[str, Any] | None
    violations: list[str]
    stdout: str
    stderr: str
    version_before: int | None
    version_after: int | None
    receipt_seq: int | None
    links: Links


class SubmissionPage(BaseModel):
    submissions: list[SubmissionSummary]
    next_cursor: str | None


class DiffPage(BaseModel):
    """One run's changes, a page at a time in path order; ``summary.changes_sha256`` is the
    digest of the whole list (RFC 8785 JSON array of every page's changes)."""

    phase: str
    summary: DiffSummary | None
    changes: list[dict[str, Any]]
    next_cursor: int | None


class ReceiptPage(BaseModel):
    receipts: list[dict[str, Any]]
    next_since_seq: int | None


class KeyView(BaseModel):
    key_id: str
    pem: str
    created: datetime
    status: str


class WorkspaceView(BaseModel):
    name: str
    version: int
    versions: list[int]


class ProfileView(BaseModel):
    name: str
    description: str
    image: str
    digest: str
    network: bool
    limits: dict[str, Any]
    tripwires: list[str]


class BundleView(BaseModel):
    name: str
    version: str
    digest: str
    description: str


class PolicyView(BundleView):
    shadow: BundleView | None = None
    shadow_decisions: int = 0
    shadow_disagreements: int = 0


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    reason: str = Field(min_length=1, max_length=2000)


class ApprovalRequest(BaseModel):
    """What an approver needs to decide: the code, what its dry run did, and why it waits.
    Bounded: the code and lists are cut (the ``links`` of the submission lead to the rest)."""

    submission: SubmissionView
    code: str
    code_truncated: bool
    files: list[str]
    files_count: int
    dry_run_diff: DiffSummary | None
    dry_run_changes: list[dict[str, Any]]
    waiting_because: list[dict[str, Any]]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


def approval_request(sub: Submission, request: RequestPreview | None,
                     changes: list[dict[str, Any]]) -> ApprovalRequest:
    """``sub`` at a glance, what ``request`` shows of its code and files, and the first of
    the dry run's ``changes`` (all read from the store without loading the request whole)."""
    waiting = [d for d in sub.decisions if d.outcome.value == "REQUIRE_APPROVAL"]
    shown = request or RequestPreview(code="", code_chars=0, files=(), files_count=0)
    return ApprovalRequest(
        submission=submission_view(sub), code=shown.code,
        code_truncated=shown.code_chars > len(shown.code), files=list(shown.files),
        files_count=shown.files_count, dry_run_diff=sub.dry_run_diff, dry_run_changes=changes,
        waiting_because=[r.model_dump() for d in waiting for r in d.rules])


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
        id=sub.id, state=sub.state.value, reason=sub.reason, agent=request.agent,
        language=request.language.value, workspace=request.workspace, profile=request.profile,
        created_at=sub.created_at, updated_at=sub.updated_at, decisions=list(sub.decisions),
        dry_run=observation_summary(sub.dry_run, sub.dry_run_diff),
        bounded_run=observation_summary(sub.bounded_run, sub.bounded_run_diff),
        violations=list(sub.violations), stdout=sub.stdout, stderr=sub.stderr,
        version_before=sub.base_version, version_after=sub.new_version,
        receipt_seq=sub.receipt_seq, links=links(sub.id))
