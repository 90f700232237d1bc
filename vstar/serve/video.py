"""A request's `video_url` → sampled frames, with the server's limits, through the project's one frame sampler.

Three kinds of URL, nothing else:
  data:video/mp4;base64,...   the bytes inline (written to a temporary file, then decoded)
  /abs/path.mp4, file://...   a file on the server, only under `serve.allowed_roots` (none by default)
  http(s)://host/...          fetched only when `host` is in `serve.allowed_domains` (none by default),
                              at most `serve.max_video_bytes`, redirects not followed

Each refusal is an `APIError` with a 4xx status: 403 for a path or host that is not allowed, 413 for too
many bytes, 422 for a video that cannot be decoded, 400 for the rest (a bad URL, too long a video).

    >>> check_path("/etc/passwd", ["/data/videos"])
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 403 messages: the video path is not under an allowed root (serve.allowed_roots)
    >>> check_host("https://example.com/a.mp4", ["videos.example.org"])
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 403 messages: host 'example.com' is not in serve.allowed_domains
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from vstar.config import DataConfig, ServeConfig
from vstar.data.frames import Frames, VideoDecodeError, decode_options, sample_frames
from vstar.serve.protocol import APIError

DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
PARAM = "messages"  # the video lives in the messages: every error here names them
CHUNK = 1 << 20


def load_video(url: str, num_frames: int, limits: ServeConfig, data: DataConfig, timeout_s: float) -> Frames:
    """Fetch or locate the video, check its size, sample `num_frames` frames, check its duration."""
    with tempfile.TemporaryDirectory(prefix="vstar-serve-") as tmp:
        path = local_path(url, limits, tmp, timeout_s)
        size = os.path.getsize(path)
        if size > limits.max_video_bytes:
            raise APIError(413, f"the video has {size} bytes; the limit is {limits.max_video_bytes}", PARAM)
        try:
            options = decode_options(data) | {
                "num_frames": num_frames,
                "timeout_s": min(data.decode_timeout_s, timeout_s),
            }
            frames = sample_frames(path, **options)
        except VideoDecodeError as e:  # the reason names the decoders' errors, not our temporary path
            raise APIError(422, f"the video could not be decoded: {e.reason}", PARAM) from None
    duration = frames.meta.total_frames / frames.meta.fps
    if duration > limits.max_duration_s:
        raise APIError(400, f"the video lasts {duration:.1f} s; the limit is {limits.max_duration_s:g} s", PARAM)
    return frames


def local_path(url: str, limits: ServeConfig, tmp: str, timeout_s: float) -> str:
    """A local file holding the video: the allowed path itself, or a file written into `tmp`."""
    if url[:5].lower() == "data:":
        return _write(_data_url_bytes(url, limits.max_video_bytes), tmp)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        check_host(url, limits.allowed_domains)
        return _write(fetch(url, limits.max_video_bytes, timeout_s), tmp)
    if scheme in ("", "file"):
        path = check_path(url.removeprefix("file://"), limits.allowed_roots)
        if not os.path.isfile(path):
            raise APIError(400, "the video path is not a file on the server", PARAM)
        return path
    raise APIError(400, f"unsupported video URL scheme {scheme!r}: use data:, a path, or http(s)", PARAM)


def check_path(path: str, roots: list[str]) -> str:
    """The real path (symlinks resolved) if it lies under one of `roots`; else a 403."""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if os.path.commonpath([real, top]) == top:
            return real
    raise APIError(403, "the video path is not under an allowed root (serve.allowed_roots)", PARAM)


def check_host(url: str, domains: list[str]) -> None:
    """A 403 unless the URL's host is one of `domains` or a subdomain of one."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if not any(host == d.lower() or host.endswith("." + d.lower()) for d in domains):
        raise APIError(403, f"host {host!r} is not in serve.allowed_domains", PARAM)


def _data_url_bytes(url: str, max_bytes: int) -> bytes:
    head = DATA_URL.match(url)
    if not head:
        raise APIError(400, "a data URL must look like data:video/mp4;base64,<bytes>", PARAM)
    payload = url[head.end() :]
    if len(payload) * 3 // 4 > max_bytes + 2:  # refuse before decoding: base64 is 4 characters per 3 bytes
        raise APIError(413, f"the video has about {len(payload) * 3 // 4} bytes; the limit is {max_bytes}", PARAM)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the data URL's payload is not valid base64", PARAM) from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to a host that is not allowed: refuse it (urllib then raises HTTPError)."""

    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, max_bytes: int, timeout_s: float) -> bytes:
    """GET `url`, at most `max_bytes` (a 413 beyond), no redirects, each socket operation within `timeout_s`."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise APIError(413, f"the video has {length} bytes; the limit is {max_bytes}", PARAM)
            body = bytearray()
            while piece := response.read(CHUNK):
                body += piece
                if len(body) > max_bytes:
                    raise APIError(413, f"the video has more than {max_bytes} bytes", PARAM)
            return bytes(body)
    except urllib.error.HTTPError as e:
        raise APIError(400, f"fetching the video failed: HTTP {e.code}", PARAM) from None
    except (urllib.error.URLError, OSError) as e:
        raise APIError(400, f"fetching the video failed: {getattr(e, 'reason', e)}", PARAM) from None


def _write(data: bytes, tmp: str) -> str:
    path = os.path.join(tmp, "video")
    with open(path, "wb") as f:
        f.write(data)
    return path
