"""A request's `video_url` → sampled frames, through the project's one frame sampler; its `image_url` → an RGB
image. Both with the server's limits.

Three kinds of URL, for videos and images alike, nothing else:
  data:video/mp4;base64,...   the bytes inline (written to a temporary file, then decoded; data:image/png;... too)
  /abs/path.mp4, file://...   a file on the server, only under `serve.allowed_roots` (none by default)
  http(s)://host/...          fetched, as vLLM does: any public host by default; with `serve.allowed_domains`,
                              only those hosts (and their subdomains)

A fetch is bounded and cannot be pointed inward: the host is resolved once and every address it resolves to must
be public — loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16, the cloud
metadata service at 169.254.169.254, fe80::/10), carrier-grade NAT, multicast, reserved and unspecified addresses
are refused with a 403 (an IPv4 address inside IPv6 is judged as IPv4) — and the connection goes to that checked
address (a second DNS answer cannot swap in another). A host named in `serve.allowed_domains` is trusted as the
operator's, private or not. Redirects are followed up to 5 times, each target checked the same way. At most
`serve.max_video_bytes` for a video or an image (413 beyond), and the whole download, redirects included, within the request's time
left (504 past it), however slowly the server sends.

Each refusal is an `APIError` with a 4xx status: 403 for a path or host that is not allowed, 413 for too
many bytes, 422 for a video or image that cannot be decoded (or an image over `data.max_decode_pixels`), 400 for
the rest (a bad URL, too long a video). Error texts name the rule, never the server's own paths.

    >>> check_path("/etc/passwd", ["/data/videos"])
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 403 messages: the path is not under an allowed root (serve.allowed_roots)
    >>> check_host("https://example.com/a.mp4", ["videos.example.org"])
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 403 messages: host 'example.com' is not in serve.allowed_domains
    >>> public_address("169.254.169.254"), public_address("::ffff:10.0.0.1"), public_address("8.8.8.8")
    (False, False, True)
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time
import urllib.parse

from vstar.config import DataConfig, ServeConfig
from vstar.data.frames import Frames, VideoDecodeError, decode_options, sample_frames
from vstar.serve.protocol import APIError

DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
PARAM = "messages"  # the video or image lives in the messages: every error here names them
CHUNK = 1 << 20
MAX_REDIRECTS = 5


def sized_local_path(url: str, what: str, limits: ServeConfig, tmp: str, timeout_s: float) -> str:
    """`local_path`, refused with a 413 when the file has more than serve.max_video_bytes."""
    path = local_path(url, limits, tmp, timeout_s)
    size = os.path.getsize(path)
    if size > limits.max_video_bytes:
        raise APIError(413, f"the {what} has {size} bytes; the limit is {limits.max_video_bytes}", PARAM)
    return path


def load_video(url: str, num_frames: int, limits: ServeConfig, data: DataConfig, timeout_s: float) -> Frames:
    """Fetch or locate the video, check its size, sample `num_frames` frames, check its duration."""
    with tempfile.TemporaryDirectory(prefix="vstar-serve-") as tmp:
        path = sized_local_path(url, "video", limits, tmp, timeout_s)
        try:
            options = decode_options(data) | {
                "num_frames": num_frames,
                "timeout_s": min(data.decode_timeout_s, timeout_s),
            }
            frames = sample_frames(path, **options)
        except VideoDecodeError as e:  # the decoders' words, without the server's paths (a decoder may name them)
            reason = e.reason.replace(path, "the video").replace(tmp, "the server")
            raise APIError(422, f"the video could not be decoded: {reason}", PARAM) from None
    duration = frames.meta.total_frames / frames.meta.fps
    if duration > limits.max_duration_s:
        raise APIError(400, f"the video lasts {duration:.1f} s; the limit is {limits.max_duration_s:g} s", PARAM)
    return frames


def load_image(url: str, limits: ServeConfig, data: DataConfig, timeout_s: float):
    """Fetch or locate the image, check its size in bytes and in pixels (`data.max_decode_pixels`, read from the
    header before decoding), decode it to RGB (an animation's first frame)."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="vstar-serve-") as tmp:
        path = sized_local_path(url, "image", limits, tmp, timeout_s)
        try:
            with Image.open(path) as image:
                width, height = image.size
                if width * height > data.max_decode_pixels:
                    raise APIError(422, f"the image has {width}x{height} pixels ({width * height:,}); the limit "
                                   f"is data.max_decode_pixels ({data.max_decode_pixels:,})", PARAM)  # fmt: skip
                return image.convert("RGB")
        except APIError:
            raise
        except Exception as e:  # whatever PIL raises on a damaged or hostile file is the request's fault, not ours
            reason = str(e).replace(path, "the image").replace(tmp, "the server")
            raise APIError(422, f"the image could not be decoded: {type(e).__name__}: {reason}", PARAM) from None


def local_path(url: str, limits: ServeConfig, tmp: str, timeout_s: float) -> str:
    """A local file holding the video or image: the allowed path itself, or a file written into `tmp`."""
    if url[:5].lower() == "data:":
        return _write(_data_url_bytes(url, limits.max_video_bytes), tmp)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _write(fetch(url, limits.max_video_bytes, timeout_s, limits.allowed_domains), tmp)
    if scheme in ("", "file"):
        path = check_path(url.removeprefix("file://"), limits.allowed_roots)
        if not os.path.isfile(path):
            raise APIError(400, "the path is not a file on the server", PARAM)
        return path
    raise APIError(400, f"unsupported URL scheme {scheme!r}: use data:, a path, or http(s)", PARAM)


def check_path(path: str, roots: list[str]) -> str:
    """The real path (symlinks resolved) if it lies under one of `roots`; else a 403."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([real, top]) == top:
            return real
    raise APIError(403, "the path is not under an allowed root (serve.allowed_roots)", PARAM)


def check_host(url: str, domains: list[str]) -> None:
    """A 403 unless the URL's host is one of `domains` or a subdomain of one."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not any(host == d.lower() or host.endswith("." + d.lower()) for d in domains):
        raise APIError(403, f"host {host!r} is not in serve.allowed_domains", PARAM)


def _data_url_bytes(url: str, max_bytes: int) -> bytes:
    head = DATA_URL.match(url)
    if not head:
        raise APIError(400, "a data URL must look like data:video/mp4;base64,<bytes> (or data:image/png;...)", PARAM)
    payload = url[head.end() :]
    if len(payload) * 3 // 4 > max_bytes + 2:  # refuse before decoding: base64 is 4 characters per 3 bytes
        raise APIError(413, f"the data URL has about {len(payload) * 3 // 4} bytes; the limit is {max_bytes}", PARAM)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the data URL's payload is not valid base64", PARAM) from None


def public_address(ip: str) -> bool:
    """Whether an address is on the public internet (an IPv4 address mapped into IPv6 judged as IPv4)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int, allowed_domains: list[str]) -> str:
    """The address to connect to: the host's first, once every address it resolves to is public (or the host is
    allow-listed); a 403 naming the rule otherwise."""
    if allowed_domains:
        check_host(f"//{host}", allowed_domains)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise APIError(400, f"fetching the URL failed: cannot resolve {host!r} ({e})", PARAM) from None
    addresses = [info[4][0] for info in infos]
    if not allowed_domains and not all(public_address(a) for a in addresses):
        raise APIError(403, f"host {host!r} resolves to a non-public address; only public hosts are fetched", PARAM)
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand (the Host header still names the host)."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = self.held = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address, the certificate verified against the host's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.held = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(url: str, max_bytes: int, timeout_s: float, allowed_domains: list[str] | None = None) -> bytes:
    """GET `url` under the rules above: public or allow-listed hosts only, pinned to the checked address, up to
    MAX_REDIRECTS redirects each checked again, at most `max_bytes`, all within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise APIError(400, f"unsupported URL {parts.scheme or 'without a scheme'!r}: use http(s)", PARAM)
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        address = resolve(parts.hostname, port, allowed_domains or [])
        kind = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
        conn = kind(parts.hostname, port, address, _left(deadline))
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"User-Agent": "vstar-serve", "Accept": "*/*"})  # fmt: skip
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise APIError(400, f"fetching the URL failed: HTTP {response.status}", PARAM)
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise APIError(413, f"the URL's body has {length} bytes; the limit is {max_bytes}", PARAM)
            body = bytearray()
            while not response.isclosed():  # closed: the whole body (Content-Length) was read
                # a slow sender meets the request's deadline, not a read's (`held`: the response may own the socket)
                conn.held.settimeout(_left(deadline))
                piece = response.read1(min(CHUNK, max_bytes + 1 - len(body)))  # what has come, not a full chunk
                if not piece:
                    return bytes(body)
                body += piece
                if len(body) > max_bytes:
                    raise APIError(413, f"the URL's body has more than {max_bytes} bytes", PARAM)
            return bytes(body)
        except TimeoutError:
            raise APIError(504, "fetching the URL took longer than the request may", PARAM) from None
        except (OSError, http.client.HTTPException):  # one text for all: which error would tell a port's state
            raise APIError(400, "fetching the URL failed: the host could not be reached or broke off", PARAM) from None
        finally:
            conn.close()
    raise APIError(400, f"fetching the URL failed: more than {MAX_REDIRECTS} redirects", PARAM)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise APIError(504, "fetching the URL took longer than the request may", PARAM)
    return left


def _write(data: bytes, tmp: str) -> str:
    path = os.path.join(tmp, "media")
    with open(path, "wb") as f:
        f.write(data)
    return path
