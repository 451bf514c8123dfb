"""`nyxmed serve`: the HTTP JSON API in front of a release's coder (docs/coding.md)."""

from __future__ import annotations

import argparse

from nyxmed.cli import options
from nyxmed.config import ServeConfig


def register(sub) -> None:
    options.add_command(sub, "serve", ServeConfig, serve,
                        help="serve a coder over HTTP: POST /v1/code, GET /healthz, GET /v1/release")


def serve(args: argparse.Namespace) -> int:
    import os

    from nyxmed.coder import coder_from_config
    from nyxmed.config import ConfigError
    from nyxmed.serve import create_app, run

    cfg = options.load(ServeConfig, args)
    token = None
    if cfg.token_env:
        token = os.environ.get(cfg.token_env)
        if not token:
            raise ConfigError(f"token_env: ${cfg.token_env} is not set or empty")
    app = create_app(coder_from_config(cfg), token, cfg.max_request_bytes, cfg.max_reports)
    print(f"nyxmed serve: http://{cfg.host}:{cfg.port} (POST /v1/code)", flush=True)
    run(app, cfg.host, cfg.port)
    return 0
