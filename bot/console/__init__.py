"""The operator console: ``/console``, for call-centre staff at a desk.

Server-rendered pages reading the same Redis log the worker writes; the NLU
model is never loaded here.  Every page needs a signed-in operator and every
POST a CSRF token.
"""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates")

from bot.console import auth, conversations, dashboard, faq_files, improve, times  # noqa: E402,F401  (register the routes)
