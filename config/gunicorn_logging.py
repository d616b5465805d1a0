"""gunicorn's access log, minus the console's polls (``logger_class`` in config/gunicorn.conf.py)."""
from gunicorn.glogging import Logger

QUIET_PATHS = ("/console/changes",)  # every open console page asks every 2 s


class AccessLogger(Logger):
    """Skips successful polls, which would fill a PaaS log quota and bury the webhook lines."""

    def access(self, resp, req, environ, request_time):
        if environ.get("PATH_INFO") in QUIET_PATHS and str(resp.status).startswith("200"):
            return
        super().access(resp, req, environ, request_time)
