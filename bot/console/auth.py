"""Signing operators in and out, CSRF tokens, and the login rate limit."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import abort, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash

from bot.console.blueprint import bp

#: Failed sign-ins allowed per 15 minutes from one client address, and on one operator name from anywhere: one
#: address's typos lock out only that address, and a guesser spread over many addresses is still held to a few
#: tries an account.
_FAILURES_PER_ADDRESS, _FAILURES_PER_NAME, _LOCKOUT_S = 5, 10, 900
_SESSION_TTL_S = 12 * 3600  # idle this long (a shift and more), an operator signs in again


def operators(settings) -> dict[str, str]:
    """``name:hash,…`` → {name: hash}; the hash itself contains colons, the name does not."""
    pairs = (item.strip().split(":", 1) for item in settings.console_operators.split(",") if ":" in item)
    return {name.strip(): hashed.strip() for name, hashed in pairs}


def csrf_token() -> str:
    """One random token per session, put in every form and checked on every POST."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.app_context_processor
def _template_helpers():
    return {"csrf_token": csrf_token, "operator": session.get("operator")}


@bp.before_request
def _guard():
    """Sign-in required everywhere but the login page; CSRF checked on every POST."""
    if request.method == "POST":
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent, session.get("csrf", "")):
            abort(400, "missing or wrong CSRF token: reload the page and try again")
    if request.endpoint == "console.login":
        return None
    g.operator = _signed_in()
    if g.operator is None:
        session.clear()
        return redirect(url_for("console.login", next=request.path))
    return None


def _signed_in() -> str | None:
    """This session's operator while the server still holds the session: signing out, expiry and removal from
    CONSOLE_OPERATORS end it here, whatever the browser kept.  Each request extends it."""
    sid, name = session.get("sid"), session.get("operator")
    services = current_app.extensions["bot"]
    if not sid or not name or name not in operators(services.settings):
        return None
    held, _ = services.redis.pipeline().get(_session_key(sid)).expire(_session_key(sid), _SESSION_TTL_S).execute()
    return name if held and held.decode() == name else None


def _session_key(sid: str) -> str:
    return f"console:session:{sid}"


def _limit_keys(name: str) -> tuple[str, str]:
    """Failure counters of the client's address (as the trusted proxy saw it) and of the operator name."""
    hashed_name = hashlib.sha256(name.encode()).hexdigest()[:32]  # any text a guesser types, kept short
    return f"console:login-failures:addr:{request.remote_addr}", f"console:login-failures:name:{hashed_name}"


@bp.route("/login", methods=["GET", "POST"])
def login():
    redis = current_app.extensions["bot"].redis
    error, status = None, 200
    if request.method == "POST":
        name, password = request.form.get("name", ""), request.form.get("password", "")
        by_address, by_name = _limit_keys(name)
        address_failures, name_failures = (int(n or 0) for n in redis.mget(by_address, by_name))
        hashed = operators(current_app.extensions["bot"].settings).get(name)
        if address_failures >= _FAILURES_PER_ADDRESS or name_failures >= _FAILURES_PER_NAME:
            error, status = f"Too many failed sign-ins. Try again in {_LOCKOUT_S // 60} minutes.", 429
        elif hashed and check_password_hash(hashed, password):
            redis.delete(by_address, by_name)
            sid = secrets.token_urlsafe(32)
            redis.set(_session_key(sid), name, ex=_SESSION_TTL_S)
            session.clear()
            session.update(operator=name, sid=sid)
            target = request.args.get("next", "")
            return redirect(target if target.startswith("/console") else url_for("console.conversations"))
        else:
            pipe = redis.pipeline()
            for key in (by_address, by_name):
                pipe.incr(key).expire(key, _LOCKOUT_S)
            pipe.execute()
            error, status = "Wrong name or password.", 401
    return render_template("console/login.html", error=error), status


@bp.post("/logout")
def logout():
    current_app.extensions["bot"].redis.delete(_session_key(session.get("sid", "")))
    session.clear()
    return redirect(url_for("console.login"))
