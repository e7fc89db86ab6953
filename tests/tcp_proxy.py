"""A TCP proxy whose far side can be cut: an outage of PostgreSQL or Redis as
clients see it (connections reset, new ones refused), without stopping a
server other tests share."""

from __future__ import annotations

import asyncio
import threading

from tests.redis_server import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._loop.call_soon_threadsafe(self._flowing.set)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.up()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def up(self) -> None:
        """Accept and forward connections again."""

        async def start() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._call(start())

    def down(self) -> None:
        """Reset every open connection and refuse new ones, as a stopped server does."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(stop())

    def hang(self) -> None:
        """Keep every connection open and accept new ones, but pass nothing on:
        a server that stopped answering (frozen, or a network partition)."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_writer)
        await self._flowing.wait()
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    await self._flowing.wait()
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.transport.abort()

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        self._writers.discard(client_writer)
        self._writers.discard(server_writer)
