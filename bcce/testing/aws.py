"""A moto server on the loopback interface: real HTTP AWS endpoints for tests, no network.

``MotoServer`` runs moto's threaded server in the test process on ``127.0.0.1`` and a port the
kernel chose, so parallel test sessions never collide. Point clients at :attr:`MotoServer.url`
(e.g. ``aws.endpoint_url`` or ``ssm.endpoint_url``) with dummy credentials in the environment.
moto is imported when the server starts, not when this module is imported.
"""

from __future__ import annotations

import logging
import urllib.request
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"


class MotoServer:
    """moto's threaded server bound to ``127.0.0.1``; a context manager that starts and stops it."""

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: Any = None

    def start(self) -> MotoServer:
        """Start serving (idempotent); with ``port=0`` the kernel picks a free port."""
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO; tests want failures, not traffic.
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self.host, self.port = server.get_host_and_port()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        """The endpoint URL for every AWS service, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the moto server is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every resource created so far (``POST /moto-api/reset``)."""
        url = f"{self.url}/moto-api/reset"
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - http we built
        # No proxy: the server is on the loopback interface, whatever HTTP_PROXY says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["LOOPBACK", "MotoServer"]
