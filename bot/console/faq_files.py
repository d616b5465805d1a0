"""The FAQ files as the console reads them: while an edit has broken them, the last good version (the one the
worker still serves) and what is wrong, which every console page shows in a banner."""
from __future__ import annotations

import threading

from flask import current_app

from bot.console.blueprint import bp
from nlu.faq import Faq, FaqError, load_faq, signature_of

_lock = threading.Lock()
_read: dict = {}  # folder -> (the files' signature, the FAQ or None, the error or "")
_last_good: dict = {}  # folder -> the last FAQ read whole


def faq_files(faq_dir: str) -> tuple[Faq | None, str]:
    """(the FAQ, "") while the files are good; (the last good FAQ this process read, or None, the error) while
    they are broken.  Read again only when a file changed."""
    signature = signature_of(faq_dir)
    with _lock:
        cached = _read.get(faq_dir)
        if cached and cached[0] == signature:
            return cached[1], cached[2]
        try:
            faq, error = load_faq(faq_dir), ""
            _last_good[faq_dir] = faq
        except FaqError as problem:
            faq, error = _last_good.get(faq_dir), str(problem)
        _read[faq_dir] = (signature, faq, error)
        return faq, error


@bp.app_context_processor
def _faq_error():
    return {"faq_error": faq_files(current_app.extensions["bot"].settings.faq_dir)[1]}
