"""The routes: parse, call the service, render. No decisions are taken here. What each
answers besides its own type is declared with ``answers`` (see ``openapi``)."""

import hashlib
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import rfc8785
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator

from controller.adapters.fs.trees import read_file
from controller.api import examples
from controller.api.deps import APPROVERS, ApiContext, Caller, Ctx, settled
from controller.api.openapi import BODY, answers
from controller.api.schemas import (
    APPROVAL_CHANGES,
    ApprovalBody,
    ApprovalRequest,
    DiffPage,
    Envelope,
    KeyView,
    LintFinding,
    PolicyView,
    PrincipalView,
    ProfileLint,
    ProfileView,
    QueueView,
    ReceiptPage,
    StatusView,
    SubmissionPage,
    SubmissionView,
    WorkspaceView,
    approval_request,
    bundle_view,
    profile_view,
    submission_view,
)
from controller.api.streams import sees
from controller.api.telemetry import TraceParentHeader, trace_parent
from controller.core import untrusted
from controller.core.models import (
    WORKSPACE_NAME,
    Phase,
    Principal,
    Role,
    State,
    Submission,
    SubmissionBody,
)
from controller.core.profile import Profile
from controller.errors import (
    ForbiddenError,
    InputError,
    NotFoundError,
    ProfileError,
    SigningError,
    UnavailableError,
)
from controller.profiles.lint import lint_loaded
from controller.profiles.load import load_profile

SUBMITTERS = frozenset({Role.AGENT, Role.ADMIN})
SUBMISSIONS = "/v1/submissions"
HOLD = "submission_hold"  # in the request's state: its place, taken from its head (app.py)
OUTPUT_PAGE = 1 << 20
RECEIPT_PAGE_BYTES = 8 << 20  # a page of receipts ends past this (each is bounded)
MAX_INT = 2**62  # SQLite integers are 64-bit; larger query values are refused, not crashed on
DATE_AND_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")
BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
router = APIRouter()
log = logging.getLogger("sandgate.api")


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


@router.post(SUBMISSIONS, status_code=202, response_model=SubmissionView,
             tags=["submissions"], operation_id="submit", responses={
                 **answers(*BODY, 403, 409, 503), 202: {"headers": {"Location": _header(
                     "The submission's URL", {"type": "string"})}}})
async def submit(body: Annotated[SubmissionBody, Body(openapi_examples=examples.SUBMIT)],
                 ctx: Ctx, who: Caller, http: Request,
                 wait: Annotated[float, Query(ge=0, le=60, description=(
                     "Seconds to wait for the end (or a parking for approval)"))] = 0,
                 idempotency_key: Annotated[str | None, Header(max_length=200, description=(
                     "Retries with the same key and body answer the same submission; the "
                     "same key with another body is a 409"))] = None,
                 traceparent: TraceParentHeader = None,
                 ) -> JSONResponse:
    """Accept code for the pipeline; with ``wait``, block until it ends (or parks for
    approval), or the wait runs out."""
    if who.role not in SUBMITTERS:
        raise ForbiddenError(f"role {who.role} cannot submit code")
    _can_sign(ctx)
    request = body.by(who.name, trace_parent(traceparent))
    key = None
    if idempotency_key is not None:
        fields = body.model_dump(mode="json")
        key = (idempotency_key, hashlib.sha256(rfc8785.dumps(fields)).hexdigest())
    sub = await run_in_threadpool(ctx.dispatcher.submit, request, key,
                                  getattr(http.state, HOLD, None))
    store = ctx.controller.store
    if wait > 0:
        await ctx.waiters.wait(sub.id, wait, lambda: settled(store.glance(sub.id)))
    current = store.glance(sub.id) or sub
    return JSONResponse(submission_view(current).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/submissions/{sub.id}"})


@router.get("/v1/submissions/{submission_id}", response_model=SubmissionView,
            tags=["submissions"], operation_id="getSubmission", responses=answers(404))
def get_submission(submission_id: str, ctx: Ctx, who: Caller) -> SubmissionView:
    return submission_view(ctx.readable(submission_id, who))


def _date_and_time(value: object) -> object:
    """An RFC 3339 date and time, as the schema says: not a number of seconds, nor a day."""
    if isinstance(value, str) and not DATE_AND_TIME.match(value):
        raise ValueError("a date and time, as 2025-06-01T12:00:00Z")
    return value


@router.get("/v1/submissions", response_model=SubmissionPage, tags=["submissions"],
            operation_id="listSubmissions", responses=answers(404, 422))
def list_submissions(ctx: Ctx, who: Caller,
                     state: Annotated[State | None, Query(description="Only in this state")]
                     = None,
                     since: Annotated[datetime | None, BeforeValidator(_date_and_time),
                                      Query(description=(
                         "Only created at or after this time (UTC unless it says)"))] = None,
                     workspace: Annotated[str | None, Query(
                         pattern=WORKSPACE_NAME.pattern, description=(
                             "Only in the workspace of this name: the caller's own; to admins "
                             "and auditors, every principal's of that name"))] = None,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50,
                     cursor: Annotated[str | None, Query(description=(
                         "A next_cursor: the page after it (404 if not the caller's)"))] = None,
                     ) -> SubmissionPage:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    if cursor is not None:
        ctx.check_owner(cursor, who)
    found = ctx.controller.store.summaries(
        agent=None if who.sees_everything else who.name,
        state=state.value if state is not None else None,
        since=_stamp(since) if since is not None else None, after_id=cursor, limit=limit,
        workspace=workspace)
    return SubmissionPage(submissions=found,
                          next_cursor=found[-1].id if len(found) == limit else None)


def _stamp(moment: datetime) -> str:
    """``moment`` as the store writes times (ISO 8601 in UTC), so they compare as text."""
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(
            UTC).isoformat()
    except OverflowError as exc:  # year 1 or 9999 with an offset that leaves the calendar
        raise InputError("since: a time between the years 1 and 9999 in UTC") from exc


def _phase(sub: Submission, phase: Phase | None) -> Phase:
    """The run asked for, else the last one that ran."""
    if phase is not None:
        return phase
    return Phase.BOUNDED if sub.bounded_run is not None else Phase.DRY_RUN


@router.get("/v1/submissions/{submission_id}/diff", response_model=DiffPage,
            tags=["submissions"], operation_id="getDiff", responses=answers(404, 422))
def get_diff(submission_id: str, ctx: Ctx, who: Caller, phase: Phase | None = None,
             cursor: Annotated[int, Query(ge=0, le=MAX_INT)] | None = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> DiffPage:
    """A run's workspace changes in path order, a page at a time (``next_cursor`` back as
    ``cursor``); the last run's unless ``phase`` says which."""
    sub = ctx.readable(submission_id, who)
    chosen = _phase(sub, phase)
    rows = ctx.controller.store.changes(submission_id, chosen,
                                        after=-1 if cursor is None else cursor, limit=limit)
    summary = sub.dry_run_diff if chosen is Phase.DRY_RUN else sub.bounded_run_diff
    return DiffPage(phase=chosen, summary=summary, changes=[c for _, c in rows],
                    next_cursor=rows[-1][0] if len(rows) == limit else None)


@router.get("/v1/submissions/{submission_id}/outputs/{stream}", tags=["submissions"],
            operation_id="getOutput", response_class=Response, responses={
                **answers(404, 422), 200: {
                    "description": "The bytes the run wrote, exactly", "content": BYTES,
                    "headers": {"Sandgate-Output-Size": _header(
                        "The whole output's size in bytes", {"type": "integer"})}}})
def get_output(submission_id: str, stream: Literal["stdout", "stderr"], ctx: Ctx,
               who: Caller, phase: Phase | None = None,
               offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
               limit: Annotated[int, Query(ge=1, le=OUTPUT_PAGE)] = OUTPUT_PAGE) -> Response:
    """A run's stdout or stderr as written (bytes), from ``offset``, at most ``limit``."""
    sub = ctx.readable(submission_id, who)
    found = ctx.controller.store.output(submission_id, _phase(sub, phase), stream,
                                        offset, limit)
    data, size = found if found is not None else (b"", 0)
    return Response(data, media_type="application/octet-stream",
                    headers={"Sandgate-Output-Size": str(size)})


@router.get("/v1/submissions/{submission_id}/code", tags=["submissions"],
            operation_id="getCode", response_class=Response, responses={
                **answers(404), 200: {"description": "The code, as submitted",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}})
def get_code(submission_id: str, ctx: Ctx, who: Caller) -> Response:
    """The submitted code, as submitted (its sha256 is the receipt's subject)."""
    ctx.readable(submission_id, who)
    return Response(ctx.controller.store.code(submission_id) or "",
                    media_type="text/plain; charset=utf-8")


@router.get("/v1/receipts/{submission_id}", tags=["receipts"], operation_id="getReceipt",
            response_class=Response, responses={
                **answers(404), 200: {"model": Envelope,
                                      "description": "The DSSE envelope exactly as stored"}})
def get_receipt(submission_id: str, ctx: Ctx, who: Caller) -> Response:
    ctx.readable(submission_id, who)
    envelope = ctx.controller.store.receipt_for(submission_id)
    if envelope is None:
        raise NotFoundError(f"submission {untrusted.echo(submission_id)} has no receipt yet")
    return Response(envelope, media_type="application/json")


@router.get("/v1/receipts", response_model=ReceiptPage, tags=["receipts"],
            operation_id="listReceipts", responses=answers(422))
def list_receipts(ctx: Ctx, who: Caller, since_seq: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> ReceiptPage:
    """Envelopes in sequence order: all of them for auditors and admins, own for agents."""
    rows = ctx.controller.store.receipts(
        since_seq=since_seq, limit=limit, agent=None if who.sees_everything else who.name,
        max_bytes=RECEIPT_PAGE_BYTES)
    return ReceiptPage(receipts=[json.loads(envelope) for _, envelope in rows],
                       next_since_seq=rows[-1][0] if len(rows) == limit or (
                           sum(len(envelope) for _, envelope in rows) >= RECEIPT_PAGE_BYTES)
                       else None)


@router.get("/v1/keys", response_model=list[KeyView], tags=["receipts"],
            operation_id="listKeys", responses=answers())
def keys(ctx: Ctx, who: Caller) -> list[KeyView]:
    return [KeyView(key_id=k.key_id, pem=k.pem, created=k.created, status=k.status)
            for k in ctx.keyring.public_keys()]


@router.get("/v1/checkpoint", tags=["receipts"], operation_id="getCheckpoint",
            response_class=Response, responses={
                **answers(503), 200: {"model": Envelope, "description": (
                    "A DSSE envelope (payloadType application/vnd.sandgate.checkpoint+json) "
                    "over the log's tree size and RFC 6962 root hash")}})
def checkpoint(ctx: Ctx, who: Caller) -> Response:
    """A signed tree head over the whole receipt log: keep it, and ``sandgate-verify
    --checkpoint`` finds a later copy of the log that lost or changed a receipt it covers."""
    signed = ctx.keyring.checkpoint(*ctx.controller.store.tree())
    return Response(signed, media_type="application/json")


def _workspace(ctx: ApiContext, name: str, who: Principal,
               owner: str | None) -> tuple[int, str]:
    """(version, directory) of a workspace of the caller's (names are per principal);
    admins and auditors name another principal's with ``owner``."""
    if owner is not None and not who.sees_everything and owner != who.name:
        raise NotFoundError(f"workspace {name!r} not found")
    found = ctx.controller.store.workspace(owner or who.name, name) \
        if WORKSPACE_NAME.match(name) and WORKSPACE_NAME.match(owner or who.name) else None
    if found is None:
        raise NotFoundError(f"workspace {name!r} not found")
    return found


Owner = Annotated[str | None, Query(max_length=64, description=(
    "Whose workspace (admins and auditors); the caller's own by default"))]


@router.get("/v1/workspaces/{name}", response_model=WorkspaceView, tags=["workspaces"],
            operation_id="getWorkspace", responses=answers(404, 422))
def get_workspace(name: str, ctx: Ctx, who: Caller, owner: Owner = None) -> WorkspaceView:
    version, directory = _workspace(ctx, name, who, owner)
    versions = [v for v in range(version + 1)
                if ctx.controller.workspaces.version_dir(directory, v).is_dir()]
    return WorkspaceView(name=name, version=version, versions=versions)


@router.get("/v1/workspaces/{name}/files/{path:path}", tags=["workspaces"],
            operation_id="getWorkspaceFile", response_class=Response, responses={
                **answers(404, 422), 200: {"description": "The file's bytes", "content": BYTES}})
def get_file(name: str, path: str, ctx: Ctx, who: Caller, owner: Owner = None,
             version: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None) -> Response:
    """A file at the current (or a given) version; workspaces change only by submissions."""
    current, directory = _workspace(ctx, name, who, owner)
    chosen = current if version is None else version
    if chosen > current:
        raise NotFoundError(f"workspace {name!r} has no version {chosen}")
    data = read_file(ctx.controller.workspaces.version_dir(directory, chosen), path)
    return Response(data, media_type="application/octet-stream")


@router.get("/v1/profiles", response_model=list[ProfileView], tags=["configuration"],
            operation_id="listProfiles", responses=answers())
def profiles(ctx: Ctx, who: Caller) -> list[ProfileView]:
    """Every profile loaded; to admins and auditors, with its pools' state too (hits and
    misses are every tenant's activity, not one agent's to read)."""
    pools = ctx.controller.pool.state() if who.sees_everything else {}
    return [profile_view(profile, pools.get(name))
            for name, profile in ctx.controller.profiles.items()]


@router.get("/v1/profiles/lint", response_model=list[ProfileLint], tags=["configuration"],
            operation_id="lintProfiles", responses=answers(403))
def lint_profiles(ctx: Ctx, who: Caller) -> list[ProfileLint]:
    """What ``sandgate profiles lint`` finds in each profile file of the profiles directory
    (admins and auditors), and whether each file is the profile in use."""
    if not who.sees_everything:
        raise ForbiddenError(f"role {who.role} cannot read the profiles' lint (auditors and "
                             "admins can)")
    return [_lint(path, ctx.controller.profiles)
            for path in sorted(ctx.settings.profiles_dir.glob("*.yaml"))]


def _lint(path: Path, running: dict[str, Profile]) -> ProfileLint:
    """One file, loaded once: what is linted is what is compared with the profile in use."""
    try:
        profile = load_profile(path)
    except ProfileError as exc:  # as ``lint_profile`` says it: the file's one finding
        return ProfileLint(file=path.name, profile=None, digest=None, loaded=False,
                           findings=[LintFinding(level="error", where=str(path),
                                                 message=str(exc))])
    in_use = running.get(profile.name)
    return ProfileLint(file=path.name, profile=profile.name, digest=profile.digest,
                       loaded=in_use is not None and in_use.digest == profile.digest,
                       findings=[LintFinding(level=f.level, where=f.where, message=f.message)
                                 for f in lint_loaded(profile, path)])


@router.get("/v1/policies", response_model=PolicyView, tags=["policies"],
            operation_id="getPolicies", responses=answers(404))
def policies(ctx: Ctx, who: Caller) -> PolicyView:
    """The active bundle, and the shadow one with how often it disagreed."""
    engine = ctx.controller.engine
    if engine.bundle is None:
        raise NotFoundError("no policy bundle is loaded: every decision is SILENCE")
    shadow = engine.shadow.bundle if engine.shadow is not None else None
    return PolicyView(**bundle_view(engine.bundle).model_dump(),
                      shadow=bundle_view(shadow) if shadow is not None else None,
                      shadow_decisions=engine.shadow_decisions,
                      shadow_disagreements=engine.disagreements)


@router.post("/v1/policies/reload", response_model=PolicyView, tags=["policies"],
             operation_id="reloadPolicies", responses=answers(403, 404, 422, 503))
def reload_policies(ctx: Ctx, who: Caller) -> PolicyView:
    """Reload the bundles from disk now; a broken bundle is refused (422, naming the file
    and policy) and the active one keeps deciding."""
    if who.role is not Role.ADMIN:
        raise ForbiddenError("only an admin reloads policies")
    with ctx.controller.telemetry.reloading("policies"):
        ctx.controller.engine.reload(ctx.settings.bundles_dir)
    return policies(ctx, who)


@router.post("/v1/profiles/reload", response_model=list[ProfileView], tags=["configuration"],
             operation_id="reloadProfiles", responses=answers(403, 422))
def reload_profiles(ctx: Ctx, who: Caller) -> list[ProfileView]:
    """Reload every profile now; one broken profile refuses them all (422) and the loaded
    ones stay."""
    if who.role is not Role.ADMIN:
        raise ForbiddenError("only an admin reloads profiles")
    ctx.controller.reload_profiles(ctx.settings.profiles_dir)
    return profiles(ctx, who)


@router.get("/v1/approvals", response_model=list[ApprovalRequest], tags=["approvals"],
            operation_id="listApprovals", responses=answers(403, 404, 422))
def approvals(ctx: Ctx, who: Caller, limit: Annotated[int, Query(ge=1, le=100)] = 50,
              cursor: Annotated[str | None, Query(max_length=64)] = None,
              ) -> list[ApprovalRequest]:
    """Submissions waiting for a human, oldest first, with the evidence to decide on; pass
    the last id back as ``cursor`` for the next page."""
    if who.role not in APPROVERS:
        raise ForbiddenError("only approvers and admins see approval requests")
    store = ctx.controller.store
    if cursor is not None and store.owner_of(cursor) is None:
        # An unknown cursor must not read as the end of the queue.
        raise NotFoundError(f"cursor {untrusted.echo(cursor)} names no submission")
    waiting = store.awaiting_approval(after_id=cursor, limit=limit)
    return [approval_request(sub, store.preview(sub.id), [change for _, change in store.changes(
        sub.id, Phase.DRY_RUN, limit=APPROVAL_CHANGES)]) for sub in waiting]


@router.post("/v1/submissions/{submission_id}/approval", response_model=SubmissionView,
             tags=["approvals"], operation_id="answerApproval",
             responses=answers(*BODY, 403, 404, 503))
def answer_approval(submission_id: str, body: ApprovalBody, ctx: Ctx,
                    who: Caller) -> SubmissionView:
    """Approve (the real run is queued) or reject (denied); recorded in the receipt."""
    if who.role not in APPROVERS:
        raise ForbiddenError("only approvers and admins answer approval requests")
    answered = ctx.dispatcher.approve(submission_id, who.name, body.approve, body.reason)
    return submission_view(answered)


@router.get("/v1/me", response_model=PrincipalView, tags=["operations"], operation_id="getMe",
            responses=answers())
def me(who: Caller) -> PrincipalView:
    """Who the API key is: name, role, and what it reads (as GET /v1/events says)."""
    return PrincipalView(principal=who.name, role=who.role, sees=sees(who))


@router.get("/v1/status", response_model=StatusView, tags=["operations"],
            operation_id="getStatus", responses=answers(403))
def status(ctx: Ctx, who: Caller) -> StatusView:
    """The run queue now (admins and auditors: it is every tenant's activity)."""
    if not who.sees_everything:
        raise ForbiddenError(f"role {who.role} cannot read the service's status (auditors "
                             "and admins can)")
    load = ctx.dispatcher.load()
    return StatusView(queue=QueueView(waiting=load.waiting, running=load.running,
                                      workers=ctx.dispatcher.workers, capacity=load.capacity,
                                      principals=load.principals),
                      draining=ctx.dispatcher.draining)


def _can_sign(ctx: ApiContext) -> None:
    """No unsigned receipt, ever: without a loadable key, no new work is accepted."""
    try:
        ctx.keyring.signer(create=False)
    except SigningError as exc:  # the cause names the key's path: for the log, not clients
        log.error("refusing new work: %s", exc)
        raise UnavailableError("new work is refused because receipts cannot be signed; the "
                               "controller's log says why", retry_after=30) from exc
