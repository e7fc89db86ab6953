"""Local servers that speak the providers' documented wire formats."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Self


class ThreadedHttpFake:
    """The life of a fake whose HTTP server runs in a thread of the test
    process: `with Fake() as fake:` or start()/stop()."""

    _server: ThreadingHTTPServer | None = None

    def _serve(self, server: ThreadingHTTPServer, name: str) -> None:
        self._server = server
        threading.Thread(
            target=server.serve_forever, name=name, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
