"""A TCP fault proxy between one node and Redis, switchable at runtime.

Modes:
- `pass`: bytes flow both ways.
- `delay`: every chunk is forwarded `delay_ms` after it was read (order kept).
- `blackhole`: connections stay open (new ones are accepted) but nothing is forwarded; what
  was read is held and flows again when the mode changes back (as TCP retransmission would
  deliver it after a partition heals), so writes sent during the partition arrive late.
- `reset`: every open connection is closed with a TCP RST, and new ones are reset at once.
"""

import asyncio
import socket
import struct
import time

PASS, DELAY, BLACKHOLE, RESET = "pass", "delay", "blackhole", "reset"


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int, name: str = "proxy"):
        self.upstream_port = upstream_port
        self.name = name
        self.mode = PASS
        self.delay_ms = 0
        self.port = 0
        self._server = None
        self._conns = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for pair in list(self._conns):
            for w in pair:
                _rst(w)
        self._conns.clear()

    def set(self, mode: str, delay_ms: int = 0) -> None:
        self.mode, self.delay_ms = mode, delay_ms
        if mode == RESET:
            for pair in list(self._conns):
                for w in pair:
                    _rst(w)
            self._conns.clear()
        self._changed.set()
        self._changed = asyncio.Event()

    async def _open(self):
        # Hold new connections while blackholed; reset them in reset mode.
        while self.mode == BLACKHOLE:
            await self._changed.wait()
        if self.mode == RESET:
            return None
        return await asyncio.open_connection("127.0.0.1", self.upstream_port)

    async def _accept(self, creader, cwriter) -> None:
        try:
            await self._serve(creader, cwriter)
        except asyncio.CancelledError:
            cwriter.transport.abort()

    async def _serve(self, creader, cwriter) -> None:
        if self.mode == RESET:
            _rst(cwriter)
            return
        try:
            opened = await self._open()
        except OSError:
            opened = None
        if opened is None:
            _rst(cwriter)
            return
        ureader, uwriter = opened
        pair = (cwriter, uwriter)
        self._conns.add(pair)
        try:
            await asyncio.gather(
                self._pipe(creader, uwriter, pair), self._pipe(ureader, cwriter, pair)
            )
        finally:
            self._conns.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader, writer, pair) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=4096)

        async def read():
            try:
                while True:
                    data = await reader.read(65536)
                    await queue.put((time.monotonic(), data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await queue.put((time.monotonic(), b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                t, data = await queue.get()
                while True:
                    if self.mode == RESET or pair not in self._conns:
                        return
                    if self.mode == BLACKHOLE:
                        await self._changed.wait()
                        continue
                    if self.mode == DELAY:
                        wait = t + self.delay_ms / 1000 - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(min(wait, 0.05))
                            continue
                    break
                if not data:
                    try:
                        writer.write_eof()
                    except (OSError, RuntimeError):
                        pass
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            for w in pair:
                _rst(w)
        finally:
            reading.cancel()
