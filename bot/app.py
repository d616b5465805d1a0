"""The app factory: ``create_app(settings)`` builds the web process.

gunicorn calls ``create_app()`` (settings from the environment); tests call
it with their own settings and Redis.  The web process never loads the NLU.
"""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from bot import health, local_chat, local_sinks, metrics, webhook
from bot.console.blueprint import console_blueprint
from bot.services import build_services
from config.settings import Settings


def create_app(settings: Settings | None = None, redis=None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    app = Flask(__name__)
    if settings.trusted_proxy_hops:  # the client's address and scheme as the PaaS router saw them
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    app.extensions["bot"] = build_services(settings, redis)
    app.config.update(
        SECRET_KEY=settings.secret_key or None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not settings.is_local,
    )
    app.register_blueprint(webhook.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    if settings.console_operators and settings.secret_key:
        app.register_blueprint(console_blueprint())
    if settings.is_local:
        app.register_blueprint(local_chat.bp)
        app.register_blueprint(local_sinks.bp)
    return app


def configure_logging(settings: Settings) -> None:
    """Ids and event types at INFO; message text never reaches this log."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
