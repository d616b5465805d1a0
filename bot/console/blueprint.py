"""The operator console's blueprint: ``/console``, for call-centre staff at a desk.

Server-rendered pages reading the same Redis log the worker writes; the NLU model is never loaded here.  Every
page needs a signed-in operator and every POST a CSRF token (``bot.console.auth``).
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")


def console_blueprint() -> Blueprint:
    """The blueprint with every page on it: importing a page module adds its routes."""
    from bot.console import auth, conversations, dashboard, faq_files, improve, times  # noqa: F401

    return bp
