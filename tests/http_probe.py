"""A raw HTTP client for what the usual ones will not send: a chunked body of any size (no Content-Length). Used by
tests/test_serve.py and benchmarks/serve_memory.py."""

from __future__ import annotations

import socket
import urllib.parse


def chunked_post(url: str, pieces, piece_bytes: int) -> tuple[int, bytes]:
    """POST `pieces` chunks of `piece_bytes` with chunked transfer encoding (no Content-Length) over a raw socket,
    stopping when the server stops reading; the status and body of its answer."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = f"{piece_bytes:x}\r\n".encode() + b"[" * piece_bytes + b"\r\n"
        try:
            for _ in range(pieces):
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed: read what it said
            pass
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < 20:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
