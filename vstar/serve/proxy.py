"""The request-body limit at Ray Serve's HTTP proxy, before any of the body travels to a replica.

The replica counts the body as it reads it (`app._body`, a 413 past the limit), but that alone does not bound memory:
Serve's proxy reads the client's socket as fast as it can and queues every message for the replica
(`proxy.proxy_asgi_receive` into a `MessageQueue`), and the replica's `ASGIReceiveProxy.fetch_until_disconnect` pulls
them all into an unbounded queue of its own until the client disconnects, whatever the app reads. A 200 MiB chunked
body passed through both even though the app had answered 413 at ~1 MiB.

`BodyLimit` is a pure ASGI middleware that Serve's proxy runs in front of every route: a declared Content-Length past
the limit is answered 413 without reaching a replica; a body that passes the limit while it streams (chunked) is
answered 413 there (unless the app has answered already) and the replica is told the client left, so the proxy stops
reading. Serve installs it from `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`, read when the proxy actor starts, so it
must be in the environment of the processes that start Ray: `vstar serve` sets it and the limit (`LIMIT_ENV`)
before it starts a local Ray (`proxy_env`); on a cluster `ray start` needs it (cluster.yaml exports it; the limit
defaults to the default config's).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from vstar.serve.protocol import APIError

CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "vstar.serve.proxy:middlewares"
LIMIT_ENV = "VSTAR_SERVE_MAX_BODY_BYTES"


def body_limit(max_video_bytes: int) -> int:
    """The largest request body the server reads: a video at serve.max_video_bytes as a base64 data URL (4/3 of
    it), plus 1 MiB for the rest of the request."""
    return max_video_bytes * 4 // 3 + 2**20


def default_limit() -> int:
    from vstar.config import load_config

    return body_limit(load_config().serve.max_video_bytes)


def proxy_env(limit: int) -> dict[str, str]:
    """The environment that makes Serve's proxy refuse bodies over `limit` bytes."""
    return {CALLBACK_ENV: CALLBACK, LIMIT_ENV: str(limit)}


def middlewares() -> list:
    """Serve's proxy callback: the middlewares it runs in front of every route (read in the proxy actor)."""
    from starlette.middleware import Middleware

    raw = os.environ.get(LIMIT_ENV, "")
    return [Middleware(BodyLimit, limit=int(raw) if raw.isdigit() else default_limit())]


DRAIN_BYTES = 1 << 30  # a refused body read on (and dropped) so that its client, still sending, can read the 413
DRAIN_S = 30.0


class BodyLimit:
    """413 for a request body over `limit` bytes, declared or counted while it streams; the app behind it never
    receives more than `limit` bytes.

    The 413 goes out after the rest of the body has been read and dropped (up to DRAIN_BYTES or DRAIN_S): a client
    that sends its whole body before it reads (urllib, requests) and asked for `Connection: close` would otherwise
    get a reset instead of the answer, as the server closed a socket it had not read to the end."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await _drain(receive, more=True)
            return await _refuse(send, f"the request has {int(length)} bytes; the limit is {self.limit}")
        state = {"read": 0, "answered_by": None}  # who sent http.response.start: "app" or "limit"

        async def counted_receive():
            if state["read"] > self.limit:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.limit:
                    if state["answered_by"] is None:
                        state["answered_by"] = "limit"
                        await _drain(receive, more=message.get("more_body", False))
                        await _refuse(send, f"the request has more than {self.limit} bytes")
                    return {"type": "http.disconnect"}  # the replica stops waiting; the proxy stops reading
            return message

        async def guarded_send(message):
            if message["type"] == "http.response.start" and state["answered_by"] is None:
                state["answered_by"] = "app"
            if state["answered_by"] == "app" or not message["type"].startswith("http.response"):
                await send(message)  # after the limit's 413 the app's own answer is dropped

        await self.app(scope, counted_receive, guarded_send)


async def _drain(receive, more: bool) -> None:
    """Read the rest of a request body and drop it, up to DRAIN_BYTES or DRAIN_S."""
    dropped, deadline = 0, time.monotonic() + DRAIN_S
    while more and dropped < DRAIN_BYTES:
        try:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        more = message.get("more_body", False)


async def _refuse(send, message: str) -> None:
    body = json.dumps(APIError(413, message).body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
