"""The baseline for bench/ack.py: a bare Bolt app with no-op reaction_added and message listeners.

Served exactly like ProdOps (the same `GunicornServer` options: gthread, WEB_CONCURRENCY workers,
PRODOPS_WEB_THREADS threads, keep-alive), so the only difference the benchmark sees is the app itself.

    python -m bench.bare_app --bind 127.0.0.1:PORT

Reads SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN and SLACK_API_URL from the environment (Bolt's single-team
authorization calls auth.test once per worker, against the same emulator ProdOps uses).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.server import GunicornServer
from bot.settings import Settings, load_settings

HEALTH_PATH = "/healthz"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def build_bare_app(settings: Settings) -> App:
    """A Bolt app whose listeners (reaction_added, message) do nothing, and no middleware of ours."""
    app = App(
        signing_secret=settings.slack_signing_secret or "bench-signing-secret",
        client=WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url),
        token_verification_enabled=False,
    )
    app.event("reaction_added")(lambda: None)
    app.event("message")(lambda: None)
    return app


class BareWSGI:
    """Bolt's WSGI adapter plus a constant GET /healthz (so ServerProcess can wait for it)."""

    def __init__(self, app: App) -> None:
        self.handler = SlackRequestHandler(app)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return self.handler(environ, start_response)


def build_bare_wsgi(settings: Settings) -> BareWSGI:
    """One worker process: the bare Bolt app behind the WSGI adapter."""
    return BareWSGI(build_bare_app(settings))


class BareGunicornServer(GunicornServer):
    """ProdOps' gunicorn configuration, serving the bare app instead of ProdOps."""

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("proc_name", "prodops-bench-bare")

    def load(self) -> BareWSGI:  # type: ignore[override]
        return build_bare_wsgi(self.settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a bare Bolt app the way ProdOps is served.")
    parser.add_argument("--bind", required=True, help="host:port, e.g. 127.0.0.1:3001")
    args = parser.parse_args(argv)
    BareGunicornServer(load_settings(), args.bind).run()


if __name__ == "__main__":
    main()
