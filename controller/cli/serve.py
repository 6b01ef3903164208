"""``sandgate serve``: the REST service under uvicorn."""

from __future__ import annotations

import argparse

from controller.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``."""
    serve = commands.add_parser("serve", help="run the REST service (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from controller.api.front_door import MAX_HEADER_BYTES, front_door_protocol
    from controller.api.limits import Limits
    from controller.bootstrap import open_api

    settings = Settings()
    app = open_api(settings)
    base = f"http://{args.host}:{args.port}"
    print(f"sandgate: serving on {base} (data: {settings.data_dir}); API docs at {base}/docs\n"
          "first call:\n"
          "  KEY=$(sandgate principals add my-agent --role agent)\n"
          f"  curl -s -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
          f"-d '{{\"language\": \"python\", \"code\": \"print(1)\"}}' "
          f"'{base}/v1/submissions?wait=30'", flush=True)
    limits = Limits.from_settings(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info",
                # JSON logs: uvicorn's loggers go through the root logger's JSON lines.
                log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
                timeout_graceful_shutdown=int(settings.drain_timeout_s),
                # The front door: a head must be whole within header_timeout_s and fit in
                # MAX_HEADER_BYTES; connections are bounded, per source and in all, idle
                # ones closed.
                http=front_door_protocol(limits),
                h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                limit_concurrency=limits.max_connections,
                timeout_keep_alive=limits.keep_alive_s,
                # Off unless asked for: uvicorn would otherwise believe X-Forwarded-For from
                # any loopback client, and the per-address limits with it.
                proxy_headers=settings.trust_proxy_headers,
                forwarded_allow_ips=settings.forwarded_allow_ips)
    return 0
