"""Wire helpers with the standard library only: HS256 tokens, a minimal WebSocket client
(RFC 6455, text frames, masked), and a minimal RESP client for driving redis-server."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import time


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(secret: str, user: str, ttl_secs: int = 3600) -> str:
    """An HS256 JWT for `user`, as `holdfast token` mints it."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"sub": user, "exp": int(time.time()) + ttl_secs}).encode())
    signing = f"{header}.{claims}".encode()
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(sig)}"


class Closed(Exception):
    """The WebSocket ended; `code` is the close code (1006 when there was no close frame)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class WebSocket:
    """One client WebSocket. `recv()` yields decoded JSON frames and raises `Closed`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.close_code = None

    @classmethod
    async def connect(cls, host: str, port: int, path: str, timeout: float = 3.0):
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 22), timeout
        )
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        writer.write(req.encode())
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except Exception:
            writer.close()
            raise
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            writer.close()
            raise ConnectionError(status.decode(errors="replace"))
        return cls(reader, writer)

    async def send(self, obj) -> None:
        payload = json.dumps(obj, separators=(",", ":")).encode()
        await self._send_frame(0x1, payload)

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)
        await self.writer.drain()

    async def recv(self):
        """The next JSON frame; answers pings; raises `Closed` at the end."""
        while True:
            try:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                self.close_code = self.close_code or 1006
                raise Closed(self.close_code)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_code = code
                try:
                    await self._send_frame(0x8, payload[:2])
                except (ConnectionError, OSError):
                    pass
                self.writer.close()
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode == 0x9:
                try:
                    await self._send_frame(0xA, payload)
                except (ConnectionError, OSError):
                    pass
                continue
            if opcode in (0x1, 0x2):
                return json.loads(payload)

    async def close(self, code: int = 1000) -> None:
        try:
            await self._send_frame(0x8, struct.pack("!H", code))
        except (ConnectionError, OSError):
            pass
        self.writer.close()

    def abort(self) -> None:
        """Drops the TCP connection without a close frame (a client that vanished)."""
        self.writer.transport.abort()


async def resp(port: int, *args, timeout: float = 5.0):
    """Sends one command to the Redis on 127.0.0.1:`port`; returns the decoded reply."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            b = str(a).encode()
            out += f"${len(b)}\r\n".encode() + b + b"\r\n"
        writer.write(out)
        await writer.drain()
        return await asyncio.wait_for(_read_resp(reader), timeout)
    finally:
        writer.close()


async def _read_resp(reader):
    line = (await reader.readuntil(b"\r\n"))[:-2]
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        return (await reader.readexactly(n + 2))[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return [await _read_resp(reader) for _ in range(max(n, 0))]
    raise RuntimeError(f"unexpected RESP {line!r}")
