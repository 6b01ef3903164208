"""Running the probe battery through a controller and judging each probe's containment."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from controller.adapters.fs.trees import scan
from controller.adapters.store.submissions import Store
from controller.core.models import Language, Phase, State, Submission, SubmissionRequest
from controller.core.ports import PolicyEngine
from controller.core.trees import tree_digest
from controller.service.controller import Controller
from controller.tools.probes import BATTERY, NETWORKED, Expect, ExpectKind, Probe

RESULT = re.compile(r"^result: (.*)$", re.MULTILINE)
MAX_STDOUT = 64 << 20  # more than any profile's output cap


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    expected: Expect
    observed: str
    contained: bool
    submission_id: str
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {"probe": self.probe.name, "category": self.probe.category,
                "expected": self.expected.describe(), "observed": self.observed,
                "contained": self.contained, "submission": self.submission_id,
                "seconds": round(self.seconds, 2), "notes": self.probe.notes}


def observe(sub: Submission) -> str:
    """One line saying what the sandbox did with the probe."""
    dry = sub.dry_run
    printed = RESULT.findall(sub.stdout)
    if printed and printed[-1].startswith("{"):
        printed = [f"{len(json.loads(printed[-1]))} syscalls called"]
    parts = [sub.state.value]
    if dry is not None and dry.seccomp_killed:
        parts.append("dry run killed by SIGSYS")
    if dry is not None and dry.limits_hit:
        parts.append("limits " + ",".join(limit.value for limit in dry.limits_hit))
    rules = [r.id for d in sub.decisions if d.outcome.value != "PERMIT" for r in d.rules]
    if rules:
        parts.append("rules " + ",".join(rules))
    if printed:
        parts.append(f"result: {printed[-1]}")
    if len(parts) == 1 and sub.reason:  # nothing above says why: the reason does
        parts.append(f"reason: {sub.reason}")
    return "; ".join(parts)


def contained(expect: Expect, sub: Submission) -> bool:
    dry, rules = sub.dry_run, {r.id for d in sub.decisions for r in d.rules}
    if expect.kind == ExpectKind.PRINTED:
        printed = RESULT.findall(sub.stdout)
        return bool(printed) and printed[-1].strip() in expect.tokens
    if expect.kind == ExpectKind.KILLED:
        return sub.state is State.DENIED and dry is not None and dry.seccomp_killed
    if expect.kind == ExpectKind.LIMIT:
        return sub.state is State.DENIED and dry is not None and expect.value in {
            limit.value for limit in dry.limits_hit}
    if expect.kind == ExpectKind.STATE:
        return sub.state.value in expect.tokens
    if expect.kind == ExpectKind.CENSUS:
        return not census_drift(expect, sub)
    if expect.kind == ExpectKind.RULE:
        return expect.value in rules and sub.state in (
            State.DENIED, State.ROLLED_BACK, State.QUARANTINED)
    return False  # BREACH: the profile itself allows what the probe attempts


def census_drift(expect: Expect, sub: Submission) -> list[str]:
    """Syscalls the profile denies that the sandbox answered otherwise (``nr:want!=got``)."""
    printed = RESULT.findall(sub.stdout)
    if sub.state is not State.COMMITTED or not printed:
        return ["the census did not complete"]
    try:
        seen = {int(nr): int(errno) for nr, errno in json.loads(printed[-1]).items()}
    except (ValueError, AttributeError):
        return ["the census printed no readable result"]
    drift = []
    for token in sorted(expect.tokens):
        nr_text, wanted = token.split(":")
        nr, accepted = int(nr_text), {int(e) for e in wanted.split("/")}
        if nr in seen and seen[nr] not in accepted:
            drift.append(f"{nr}:{wanted}!={seen[nr]}")
    return drift


def committed_as_validated(controller: Controller[Store, PolicyEngine], sub: Submission) -> bool:
    """For any probe that committed: the version on disk is the tree whose digest the
    receipt records (taken at validation)."""
    if sub.state is not State.COMMITTED or sub.new_version is None:
        return True
    found = controller.store.workspace(sub.request.agent, sub.request.workspace)
    if found is None:
        return False
    version = controller.workspaces.version_dir(found[1], sub.new_version)
    limit = controller.profiles[sub.request.profile].limits.workspace_bytes
    return tree_digest(scan(version, hash_limit=limit)) == sub.new_tree_digest


def with_whole_stdout(controller: Controller[Store, PolicyEngine], sub: Submission) -> Submission:
    """The submission with its last run's whole stdout (the record keeps a preview): a
    probe's result line may come after a flood."""
    phase = Phase.BOUNDED if sub.bounded_run is not None else Phase.DRY_RUN
    found = controller.store.output(sub.id, phase, "stdout", 0, MAX_STDOUT)
    if found is None:
        return sub
    return sub.model_copy(update={"stdout": found[0].decode(errors="replace")})


def select(pattern: str | None) -> list[Probe]:
    if not pattern:
        return list(BATTERY)
    found = re.compile(pattern)
    return [p for p in BATTERY if found.search(p.name) or found.search(p.category)]


def run_battery(controller: Controller[Store, PolicyEngine], profile: str, probes: Iterable[Probe],
                progress: Callable[[int, ProbeResult], None] | None = None
                ) -> list[ProbeResult]:
    """Each probe as one submission, one after another (so kills are attributed exactly)."""
    results = []
    loaded = controller.profiles[profile]
    # The same profile, with network for the real run: the binding probes' tell.
    twin = f"{profile}{NETWORKED}"
    # A digest of its own: its receipts must not name the profile without network.
    digest = hashlib.sha256(f"{loaded.digest}{NETWORKED}".encode()).hexdigest()
    controller.profiles[twin] = loaded.model_copy(update={
        "name": twin, "network": True, "digest": f"sha256:{digest}"})
    for index, probe in enumerate(probes, start=1):
        start = time.monotonic()
        seeded = _seed(controller, probe, profile)
        if seeded is not None:
            result = ProbeResult(probe, probe.expectation(loaded), seeded, False, "",
                                 time.monotonic() - start)
            results.append(result)
            if progress is not None:
                progress(index, result)
            continue
        sub = controller.submit(SubmissionRequest(
            language=probe.language, code=probe.code_for(loaded),
            profile=twin if probe.networked else profile,
            workspace=f"probe-{probe.name}", agent="sandgate-probe", files=probe.files,
            labels={"probe": probe.name}))
        sub = with_whole_stdout(controller, sub)
        expect = probe.expectation(loaded)
        observed, held = observe(sub), contained(expect, sub)
        if not committed_as_validated(controller, sub):
            observed, held = f"{observed}; the committed tree is not the validated one", False
        result = ProbeResult(probe, expect, observed, held, sub.id, time.monotonic() - start)
        results.append(result)
        if progress is not None:
            progress(index, result)
    return results


def _seed(controller: Controller[Store, PolicyEngine], probe: Probe, profile: str
          ) -> str | None:
    """Commit the probe's seed files to its workspace; None, or why that failed."""
    if not probe.seed:
        return None
    sub = controller.submit(SubmissionRequest(
        language=Language.SH, code="true", profile=profile, workspace=f"probe-{probe.name}",
        agent="sandgate-probe", files=probe.seed, labels={"probe": probe.name, "seed": "1"}))
    return None if sub.state is State.COMMITTED else f"seeding failed: {observe(sub)}"


def write_json(results: list[ProbeResult], path: Path, meta: dict[str, str]) -> None:
    path.write_text(json.dumps({**meta, "probes": [r.as_dict() for r in results],
                                "breaches": sum(not r.contained for r in results)}, indent=2))


def write_junit(results: list[ProbeResult], path: Path, suite: str) -> None:
    root = ElementTree.Element("testsuite", name=suite, tests=str(len(results)),
                               failures=str(sum(not r.contained for r in results)))
    for r in results:
        case = ElementTree.SubElement(root, "testcase", classname=r.probe.category,
                                      name=r.probe.name, time=f"{r.seconds:.2f}")
        if not r.contained:
            failure = ElementTree.SubElement(case, "failure", message="breach")
            failure.text = f"expected {r.expected.describe()}; observed {r.observed}"
    ElementTree.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
