"""The chaos invariants, checked over a data directory after anything went wrong.

Every accepted submission is in exactly one terminal state with exactly one receipt that
matches it; the receipt log verifies (signatures, shapes, contiguous sequence, hash chain);
no container of this controller and no scratch filesystem is left; nothing that was not
committed left a side effect (workspace versions on disk are exactly those the database
knows, and each version past 0 came from a committed submission); nothing was committed that
was not validated.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

from controller.adapters.fs.tmpfs import mounts_under
from controller.adapters.signing import KeyRing
from controller.adapters.store.submissions import Store
from controller.core.lifecycle import TERMINAL
from controller.core.models import Decision, Gate, Outcome, State
from controller.settings import Settings
from controller.verify.chain import verify_log
from controller.verify.dsse import load_public_keys


def check(settings: Settings, *, containers: list[str] | None = None) -> list[str]:
    """Every broken invariant, as sentences; empty when all hold."""
    store = Store(settings.db_path)
    try:
        problems = _states_and_receipts(store)
        problems += _receipt_log(store, settings)
        problems += _workspaces(store, settings)
    finally:
        store.close()
    if containers:
        problems.append(f"containers left behind: {containers}")
    if settings.runs_dir.exists() and (mounts := mounts_under(settings.runs_dir)):
        problems.append(f"scratch filesystems left mounted: {[str(m) for m in mounts]}")
    return problems


def _states_and_receipts(store: Store) -> list[str]:
    problems = []
    rows = store.submissions(agent=None, limit=1_000_000)
    receipts = {sid: state for sid, state in _receipt_states(store)}
    counts = Counter(sid for sid, _ in _receipt_states(store))
    for sub in rows:
        if sub.state not in TERMINAL:
            problems.append(f"{sub.id} is still {sub.state}")
            continue
        if counts[sub.id] != 1:
            problems.append(f"{sub.id} has {counts[sub.id]} receipts")
        elif receipts[sub.id] != sub.state.value:
            problems.append(f"{sub.id} is {sub.state} but its receipt says {receipts[sub.id]}")
        if sub.state is State.COMMITTED and not _validated(sub.decisions):
            problems.append(f"{sub.id} committed without a permitting commit decision")
    return problems


def _validated(decisions: tuple[Decision, ...]) -> bool:
    return any(d.gate is Gate.VALIDATION and d.outcome is Outcome.PERMIT for d in decisions)


def _receipt_states(store: Store) -> list[tuple[str, str]]:
    found = []
    for _, envelope in store.receipts():
        predicate = json.loads(base64.b64decode(json.loads(envelope)["payload"]))["predicate"]
        found.append((str(predicate["submission_id"]), str(predicate["state"])))
    return found


def _receipt_log(store: Store, settings: Settings) -> list[str]:
    lines = [envelope for _, envelope in store.receipts()]
    if not lines:
        return []
    pem = "".join(key.pem for key in KeyRing(settings.keys_dir).public_keys())
    report = verify_log(lines, load_public_keys(pem.encode()))
    return [f"receipt log: {problem}" for problem in report.problems]


def _workspaces(store: Store, settings: Settings) -> list[str]:
    problems = []
    committed = Counter((sub.request.agent, sub.request.workspace) for sub in store.submissions(
        agent=None, state=State.COMMITTED.value, limit=1_000_000))
    for (owner, name), (version, directory) in store.workspaces().items():
        root = settings.workspaces_dir / directory / "v"
        on_disk = sorted(int(p.name) for p in root.iterdir()) if root.is_dir() else []
        if on_disk and on_disk != list(range(version + 1)):
            problems.append(f"workspace {owner}/{name}: versions on disk {on_disk}, database "
                            f"says 0..{version}")
        if version != committed[owner, name]:
            problems.append(f"workspace {owner}/{name} is at version {version} after "
                            f"{committed[owner, name]} commits")
    leftovers = [p.name for p in settings.runs_dir.iterdir()] if settings.runs_dir.is_dir() \
        else []
    if leftovers:
        problems.append(f"run directories left behind: {leftovers}")
    return problems

