"""The Redis channel layer, configured to hold sockets for hours and hundreds of them per process.

``channels_redis`` waits for messages with a blocking pop of 5 s; a client whose socket timeout is
not longer than that (redis-py's default is 5 s) fails every idle wait and closes the dashboard's
sockets. Its default pool also raises ``MaxConnectionsError`` when more than 100 operations are in
flight, which a burst of handshakes (each joins a group) reaches at once. This layer reads with a
timeout well above the blocking pop and waits for a free pooled connection instead of failing.
"""
from __future__ import annotations

from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

POP_MARGIN_SECONDS = 10.0  # socket timeout = the layer's blocking pop + this


class PooledRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *, max_connections: int = 50, pool_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        address = host.pop("address")
        host.setdefault("socket_timeout", self.brpop_timeout + POP_MARGIN_SECONDS)
        host.setdefault("socket_connect_timeout", 2.0)
        host.setdefault("health_check_interval", 30)
        return BlockingConnectionPool.from_url(
            address, max_connections=self.max_connections, timeout=self.pool_timeout, **host
        )
