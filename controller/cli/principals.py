"""``sandgate principals``: API identities, their roles, keys and quotas."""

from __future__ import annotations

import argparse
import sys

from controller.core.models import Role
from controller.errors import InputError
from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``principals``."""
    principals = commands.add_parser("principals", help="API identities").add_subparsers(
        required=True)
    add = principals.add_parser("add", help="create a principal; prints its API key once")
    add.add_argument("name")
    add.add_argument("--role", choices=[role.value for role in Role], default="agent")
    quota = principals.add_parser(
        "quota", help="set a principal's share of the run queue (unset: the "
                      "SANDGATE_MAX_*_PER_PRINCIPAL defaults)")
    quota.add_argument("name")
    for command in (add, quota):
        command.add_argument("--max-running", metavar="N|default",
                             help="its submissions running at once")
        command.add_argument("--max-queued", metavar="N|default",
                             help="its submissions waiting (more are refused with 429)")
    add.set_defaults(handler=_principal_add)
    quota.set_defaults(handler=_principal_quota)
    principals.add_parser("list", help="list principals").set_defaults(handler=_principal_list)
    revoke = principals.add_parser("revoke", help="revoke a principal's key")
    revoke.add_argument("name")
    revoke.set_defaults(handler=_principal_revoke)


def _principal_add(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals, Quota

    quota = Quota(_quota_option("--max-running", args.max_running, None),
                  _quota_option("--max-queued", args.max_queued, None))
    key = Principals(Settings().db_path).add(args.name, Role(args.role), quota)
    print(key)
    print(f"created {args.role} {args.name!r}; the key above is shown only once",
          file=sys.stderr)
    return 0


def _principal_quota(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals, Quota

    principals = Principals(Settings().db_path)
    current = principals.quota(args.name)
    quota = Quota(_quota_option("--max-running", args.max_running, current.max_running),
                  _quota_option("--max-queued", args.max_queued, current.max_queued))
    principals.set_quota(args.name, quota)
    print(f"{args.name}: {_quota_text(quota)} (a running service applies it from the next "
          "submission on)")
    return 0


def _quota_option(option: str, given: str | None, current: int | None) -> int | None:
    """An option's value: unchanged when not given, None for 'default', else a number."""
    if given is None:
        return current
    if given == "default":
        return None
    try:
        return int(given)
    except ValueError:
        raise InputError(f"{option} takes a number or 'default', not {given!r}") from None


def _quota_text(quota: tuple[int | None, int | None]) -> str:
    running, queued = ("default" if value is None else str(value) for value in quota)
    return f"max_running={running} max_queued={queued}"


def _principal_list(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals

    principals = Principals(Settings().db_path)
    quotas = principals.quotas()
    for principal in principals.list():
        status = "revoked" if principal.revoked else "active"
        print(f"{principal.name:24} {principal.role.value:9} {status:8} "
              f"{principal.created_at.isoformat()}  "
              f"{_quota_text(quotas.get(principal.name, (None, None)))}")
    return 0


def _principal_revoke(args: argparse.Namespace) -> int:
    from controller.adapters.store.principals import Principals

    Principals(Settings().db_path).revoke(args.name)
    print(f"revoked {args.name!r}")
    return 0
