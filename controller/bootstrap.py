"""Opening a controller from settings: the one place the adapters are chosen and built."""

from __future__ import annotations

from fastapi import FastAPI

from controller.adapters.fs import lock
from controller.adapters.fs.tmpfs import ScratchMounts
from controller.adapters.fs.workspaces import Workspaces
from controller.adapters.policy.bundle import archive_bundle
from controller.adapters.policy.cedar import CedarEngine
from controller.adapters.policy.shadow import ShadowedEngine
from controller.adapters.runtime.docker import DockerRuntime
from controller.adapters.signing import KeyRing
from controller.adapters.store.principals import Principals
from controller.adapters.store.submissions import Store
from controller.adapters.telemetry.tracing import Tracer
from controller.api.app import create_app
from controller.api.deps import ApiContext
from controller.api.limits import RateLimiter
from controller.profiles.load import load_profiles
from controller.service.controller import Controller
from controller.service.dispatcher import Dispatcher
from controller.service.means import Paths, Rules
from controller.service.telemetry import Telemetry
from controller.settings import Settings


def open_controller(settings: Settings | None = None, *,
                    alone: str | None = None) -> Controller[Store, ShadowedEngine]:
    """A controller on the embedded defaults: SQLite, a generated key, the local Docker engine.
    Its data directory is locked for the rest of the process: by ``alone`` (what needs it
    alone: a service, a reconcile), else shared with other one-shot commands.

    Raises ``SandgateError`` subclasses naming what is wrong (profile, bundle, key, engine,
    a data directory in use).
    """
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock.hold(settings.data_dir, alone=alone is not None, who=alone or "a one-shot command")
    profiles = load_profiles(settings.profiles_dir)
    engine = open_policies(settings)
    owner = settings.resolved_owner()
    runtime = DockerRuntime(owner=owner)
    runtime.ping()
    store = Store(settings.db_path)
    signer = KeyRing(settings.keys_dir).signer(create=store.receipt_count() == 0)
    controller = Controller(
        store=store,
        runtime=runtime,
        engine=engine,
        signer=signer,
        profiles=profiles,
        workspaces=Workspaces(settings.workspaces_dir),
        tmpfs=ScratchMounts(),
        paths=Paths(runs=settings.runs_dir, quarantine=settings.quarantine_dir,
                    profiles=settings.profile_archive_dir, data=settings.data_dir),
        rules=Rules(max_deleted_files=settings.max_deleted_files,
                    max_parked=settings.max_parked_per_principal,
                    keep_run_dirs=settings.keep_run_dirs),
        owner=owner,
        telemetry=Telemetry(store, tracer=Tracer.from_env()),
    )
    controller.archive_profiles(profiles)
    return controller


def open_api(settings: Settings | None = None) -> FastAPI:
    """The REST service on a freshly opened controller (reconciles when it starts)."""
    settings = settings or Settings()
    controller = open_controller(settings, alone="sandgate serve")
    principals = Principals(settings.db_path)
    ctx = ApiContext(
        controller=controller,
        dispatcher=Dispatcher(controller, workers=settings.workers,
                              queue_size=settings.queue_size,
                              approval_ttl_s=settings.approval_ttl_s,
                              max_running=settings.max_running_per_principal,
                              max_queued=settings.max_queued_per_principal,
                              quota_of=principals.quota),
        principals=principals,
        keyring=KeyRing(settings.keys_dir),
        settings=settings,
        limiter=RateLimiter(settings.rate_per_s, settings.rate_burst),
    )
    return create_app(ctx)


def open_policies(settings: Settings) -> ShadowedEngine:
    """The active bundle (and the shadow one, if set), both archived by digest."""
    active = CedarEngine.from_path(settings.policy_dir)
    shadow = CedarEngine.from_path(settings.shadow_policy) if settings.shadow_policy else None
    for engine in (active, shadow):
        if engine is not None and engine.bundle is not None:
            archive_bundle(engine.bundle, settings.bundles_dir)
    return ShadowedEngine(active, shadow)
