"""gunicorn settings for the web process (``web:`` in the Procfile).

The webhook only verifies and enqueues, so a few threaded workers carry a
city's traffic; the NLU lives in the worker process, not here.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30  # a webhook request must never take this long; kill a stuck worker
graceful_timeout = 20
keepalive = 5
max_requests = 5000  # recycle workers now and then, against slow leaks
max_requests_jitter = 500
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = "*"  # the PaaS router terminates TLS in front of us
