"""``sandgate receipts`` and ``sandgate keys``: the receipt log and the keys that sign it."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receipts`` and ``keys``."""
    receipts = commands.add_parser("receipts", help="receipt log").add_subparsers(required=True)
    export = receipts.add_parser("export", help="write every receipt, one envelope per line")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="also write a signed checkpoint over exactly the exported receipts "
                             "(sandgate-verify --checkpoint FILE then finds a truncated copy)")
    export.set_defaults(handler=_export_receipts)

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(required=True)
    keys_export = keys.add_parser("export", help="write the public keys (PEM)")
    keys_export.add_argument("--out", type=Path, required=True)
    keys_export.set_defaults(handler=_export_keys)
    keys.add_parser("rotate", help="generate a new signing key").set_defaults(handler=_rotate)


def _export_receipts(args: argparse.Namespace) -> int:
    from controller.adapters.store.submissions import Store

    settings = Settings()
    store = Store(settings.db_path)
    envelopes = [envelope for _, envelope in store.receipts()]
    args.out.write_text("".join(line + "\n" for line in envelopes))
    print(f"wrote {len(envelopes)} receipts to {args.out}")
    if args.checkpoint is not None:
        from controller.adapters.signing import KeyRing

        # Over what was exported, not what the log holds now: receipts may have been added.
        signed = KeyRing(settings.keys_dir).checkpoint(*store.tree(len(envelopes)))
        args.checkpoint.write_text(signed + "\n")
        print(f"wrote a checkpoint over {len(envelopes)} receipts to {args.checkpoint}")
    return 0


def _export_keys(args: argparse.Namespace) -> int:
    from controller.adapters.signing import KeyRing

    ring = KeyRing(Settings().keys_dir)
    ring.signer()
    keys = ring.public_keys()
    args.out.write_text("".join(key.pem for key in keys))
    print(f"wrote {len(keys)} public key(s) to {args.out}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from controller.adapters.signing import KeyRing

    signer = KeyRing(Settings().keys_dir).rotate()
    print(f"new active key {signer.key_id}\n"
          "the first receipt it signs carries the handover, signed by the key before it; a "
          "running service signs with its old key until it is restarted")
    return 0
