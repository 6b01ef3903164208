"""What a probe is, and the containment it expects: printed tokens, a seccomp kill, a named
limit or rule, a final state, or (for syscalls) whatever the profile under test prescribes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from controller.core.models import Language, SubmittedFile
from controller.core.profile import Profile


class ExpectKind(StrEnum):
    """How containment is judged (``Expect.tokens`` and ``Expect.value`` say against what)."""

    PRINTED = "printed"  # the last ``result:`` line is one of ``tokens``
    KILLED = "killed"  # the dry run is killed by seccomp (SIGSYS), and the submission denied
    LIMIT = "limit"  # the dry run hits the limit named ``value``, and the submission is denied
    RULE = "rule"  # the policy rule ``value`` refuses it (denied, rolled back or quarantined)
    STATE = "state"  # the submission ends in one of the states ``tokens``
    CENSUS = "census"  # every denied syscall ``nr:errno[/errno]`` in ``tokens`` answers so
    BREACH = "breach"  # nothing can contain it: the profile allows what the probe attempts


@dataclass(frozen=True)
class Expect:
    """What containment looks like: ``kind`` says which check judges it (see ``ExpectKind``)."""

    kind: ExpectKind
    # printed: ``result:`` values; census: ``nr:errno``s; state: the states it may end in
    tokens: frozenset[str] = frozenset()
    value: str = ""  # limit: its name; rule: its id; breach: why

    def describe(self) -> str:
        if self.kind == ExpectKind.PRINTED:
            return " or ".join(sorted(self.tokens))
        if self.kind == ExpectKind.CENSUS:
            return f"{len(self.tokens)} denied syscalls answer their errno"
        if self.kind == ExpectKind.STATE:
            return f"ends {' or '.join(sorted(self.tokens))}"
        if self.kind == ExpectKind.KILLED:
            return "dry run killed by seccomp (SIGSYS), denied"
        return f"denied: {self.kind} {self.value}"


def printed(*tokens: str) -> Expect:
    return Expect(ExpectKind.PRINTED, frozenset(tokens))


def ends(*states: str) -> Expect:
    return Expect(ExpectKind.STATE, frozenset(states))


KILLED = Expect(ExpectKind.KILLED)


@dataclass(frozen=True)
class Probe:
    name: str
    category: str
    code: str
    expect: Expect | None = None  # None: derived from the profile (syscall probes)
    syscall: str | None = None
    language: Language = Language.PYTHON
    notes: str = ""
    render: Callable[[Profile], str] | None = None  # code that depends on the profile
    census: bool = False
    files: tuple[SubmittedFile, ...] = ()  # placed in the workspace, as an agent's would be
    networked: bool = False  # runs under the profile's twin with network (``binding``)
    seed: tuple[SubmittedFile, ...] = ()  # committed to its workspace before it runs

    def code_for(self, profile: Profile) -> str:
        return self.render(profile) if self.render is not None else self.code

    def expectation(self, profile: Profile) -> Expect:
        if self.census:
            return census_expectation(profile)
        if self.expect is not None:
            return self.expect
        assert self.syscall is not None
        return syscall_expectation(profile, self.syscall)


def syscall_expectation(profile: Profile, name: str) -> Expect:
    """What the profile says must happen when ``name`` is called (with unmatched arguments)."""
    if name in profile.tripwires:
        return KILLED
    rules = profile.seccomp.get("syscalls", [])
    assert isinstance(rules, list)
    for rule in rules:
        if name not in rule.get("names", []):
            continue
        action = rule.get("action")
        if action == "SCMP_ACT_ALLOW" and not rule.get("args"):
            return Expect(ExpectKind.BREACH, value=f"the profile allows {name}")
        if action == "SCMP_ACT_ERRNO":
            return printed(f"errno {rule.get('errnoRet', 1)}")
        if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"):
            return KILLED
    return printed(f"errno {profile.seccomp.get('defaultErrnoRet', 1)}")


ENOSYS = 38
ARGUMENT_FILTERED_ALLOWS = frozenset({"clone", "socket", "prctl"})


def known_syscalls() -> dict[int, str]:
    """Every syscall number this architecture assigns, with its name (from libseccomp)."""
    import pyseccomp

    arch, found = pyseccomp.system_arch(), {}
    for nr in range(0, 460):
        try:
            found[nr] = pyseccomp.resolve_syscall(arch, nr).decode()
        except (OSError, ValueError):
            continue
    return found


def census_expectation(profile: Profile) -> Expect:
    """Every number the profile denies, with the errnos that mean "denied" (``nr:e1/e2``).

    A syscall the profile does not name gets its default errno; runc answers ENOSYS instead
    for syscalls newer than the libseccomp it was built with (so that glibc falls back),
    which is a denial all the same.
    """
    default = profile.seccomp.get("defaultErrnoRet", 1)
    rules = profile.seccomp.get("syscalls", [])
    assert isinstance(rules, list)
    named = {name for rule in rules for name in rule.get("names", [])}
    expected = set()
    for nr, name in known_syscalls().items():
        outcome = syscall_expectation(profile, name)
        if outcome.kind != ExpectKind.PRINTED or name in ARGUMENT_FILTERED_ALLOWS:
            continue
        errno = next(iter(outcome.tokens)).split()[1]
        accepted = errno if name in named else f"{default}/{ENOSYS}"
        expected.add(f"{nr}:{accepted}")
    return Expect(ExpectKind.CENSUS, frozenset(expected))


ATTEMPT = """import errno, os, socket
def attempt(fn):
    try:
        value = fn()
    except OSError as exc:
        return f"errno {{exc.errno}}"
    return "ok" if value is None else str(value)
print("result:", attempt(lambda: {expr}), flush=True)
"""


def attempt(name: str, category: str, expr: str, expect: Expect, notes: str = "") -> Probe:
    """A probe that evaluates one Python expression and prints its value or its errno."""
    return Probe(name=name, category=category, code=ATTEMPT.format(expr=expr), expect=expect,
                 notes=notes)
