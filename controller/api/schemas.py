"""Request and response bodies of the API (what /openapi.json describes)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from controller.models import (
    MAX_CODE_CHARS,
    MAX_FILES,
    MAX_LABELS,
    WORKSPACE_NAME,
    Decision,
    Language,
    Submission,
    SubmittedFile,
)
from controller.receipts import observation_summary


class SubmitBody(BaseModel):
    """POST /v1/submissions: the agent is the authenticated principal, never the body."""

    model_config = ConfigDict(extra="forbid")

    language: Language
    code: str = Field(max_length=MAX_CODE_CHARS)
    files: list[SubmittedFile] = Field(default_factory=list, max_length=MAX_FILES)
    workspace: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern)] = "default"
    profile: Annotated[str, Field(pattern=WORKSPACE_NAME.pattern)] = "standard"
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=MAX_LABELS)


class Links(BaseModel):
    self: str
    events: str
    receipt: str


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


class Accepted(BaseModel):
    id: str
    state: str
    links: Links


class SubmissionPage(BaseModel):
    submissions: list[SubmissionView]
    next_cursor: str | None


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
    """What an approver needs to decide: the code, what its dry run did, and why it waits."""

    submission: SubmissionView
    code: str
    files: list[str]
    dry_run_changes: list[dict[str, Any]]
    waiting_because: list[dict[str, Any]]


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


def approval_request(sub: Submission) -> ApprovalRequest:
    changes = sub.dry_run_diff.changes[:500] if sub.dry_run_diff else ()
    waiting = [d for d in sub.decisions if d.outcome.value == "REQUIRE_APPROVAL"]
    return ApprovalRequest(
        submission=submission_view(sub), code=sub.request.code,
        files=[f.path for f in sub.request.files],
        dry_run_changes=[c.model_dump(mode="json") for c in changes],
        waiting_because=[r.model_dump() for d in waiting for r in d.rules])


def bundle_view(bundle: Any) -> BundleView:
    return BundleView(name=bundle.name, version=bundle.version, digest=bundle.digest,
                      description=bundle.description)


def links(submission_id: str) -> Links:
    base = f"/v1/submissions/{submission_id}"
    return Links(self=base, events=f"{base}/events", receipt=f"/v1/receipts/{submission_id}")


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
