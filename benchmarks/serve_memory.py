"""Memory of a serve replica under the hostile requests of issue 27 (CPU, the tiny VLM): peak resident memory of
the replica's process tree (the replica actor and its decoder child) per request, and how far above idle.

Prints measured figures; it is not a test (the suite's hostile tier checks the outcomes: tests/test_serve.py,
tests/test_hostile_video.py). Setup as benchmarks/serve.py: the tiny random Qwen2.5-VL, one local Ray with 2 CPUs,
`serve()` with the default config (1 replica, transformers backend, data.decode_memory_mib 2048 for the decoder
child, serve.max_video_bytes 64 MiB, serve.max_frames 32), the clips' folder allowed. A thread samples the RSS of
the replica's process tree every 10 ms; the tree's RSS is the sum over its processes (shared pages counted twice,
so an upper bound). Each request is sent alone, one after the other, and waited for; "before" is the tree when it
was sent, "peak" the highest sample while it ran, "idle" the tree before the first hostile request (after a warm-up
request of a small clip). Memory the replica's Python heap grew to is kept by the allocator, so "before" climbs.

Requests: an 8000x8000 one-frame mp4 (190 KB) at 32 frames, as a path; a 6000x4000 32-frame mp4 (allowed: under
data.max_decode_pixels) at 32 frames; a 1500-frame 640x480 WebM without a frame count at 32 frames, as a path and
as a data URL; 4 of the 6000x4000 at once; a 200 MiB and a 1 GiB chunked body; JSON nested 100,000 deep.

The Serve proxy's process is sampled too ("proxy" columns): it reads the client's socket and queues the body for
the replica. `vstar serve` installs the body limit there (vstar/serve/proxy.py); `--without-proxy-limit` starts Ray
without it, to compare.

    . .venv/bin/activate && python benchmarks/serve_memory.py             # about 2 minutes on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from http_probe import chunked_post  # noqa: E402  (tests/http_probe.py, shared with tests/test_serve.py)

MIB = 2**20


class TreeSampler:
    """The peak RSS of a process and its descendants, sampled every 10 ms in a thread."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> int:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that just exited
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def measure(self, fn) -> tuple[object, float, int, int]:
        """fn's result, its seconds, the tree's RSS before it and its peak while it ran."""
        self.peak = before = self.now()
        start = time.perf_counter()
        result = fn()
        time.sleep(0.05)
        return result, time.perf_counter() - start, before, self.peak


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, response.read()[:200].decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()).get("error", {}).get("message", "")[:200]


def chunked(url: str, pieces: int) -> tuple[int, str]:
    """POST a chunked body of `pieces` 64 KiB pieces (no Content-Length); the status and the answer's text."""
    status, body = chunked_post(url, pieces=pieces, piece_bytes=1 << 16)
    return status, body.decode(errors="replace")


def chat(model: str, url: str, frames: int) -> bytes:
    content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "What happens?"}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0,
            "media_io_kwargs": {"video": {"num_frames": frames}}}  # fmt: skip
    return json.dumps(body).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--without-proxy-limit", action="store_true", help="Serve's proxy without vstar's body limit")
    args = parser.parse_args()
    import ray
    from ray import serve as rserve

    from vstar.config import load_config
    from vstar.data.synth import synthesize, write_flat_clip
    from vstar.models import build_tiny_vlm
    from vstar.serve.app import serve
    from vstar.serve.proxy import body_limit, proxy_env

    work = Path(tempfile.mkdtemp(prefix="vstar-bench-serve-memory-"))
    synthesize(work / "synth", num_videos=1, seed=0)
    small = str(next((work / "synth" / "videos").glob("*.mp4")))
    huge = write_flat_clip(work / "huge.mp4", 8000, 8000, 1, preset="ultrafast")
    large = write_flat_clip(work / "large.mp4", 6000, 4000, 32, preset="ultrafast")
    webm = write_flat_clip(work / "long.webm", 640, 480, 1500, "libvpx", "webm", 30, deadline="realtime",
                           **{"cpu-used": "8"})  # fmt: skip
    model = str(build_tiny_vlm(work / "tiny"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_config(None, [f"serve.port={port}", f"serve.allowed_roots=[{work}]", "serve.request_timeout_s=120"])
    if not args.without_proxy_limit:  # as `vstar serve` does before it starts Ray
        os.environ.update(proxy_env(body_limit(cfg.serve.max_video_bytes)))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    url = serve(model, cfg, blocking=False) + "/v1/chat/completions"
    replica, proxy = (
        next(p for p in psutil.process_iter(["cmdline"]) if name in " ".join(p.info["cmdline"] or []))
        for name in ("ServeReplica", "ProxyActor")
    )
    sampler, proxy_sampler = TreeSampler(replica.pid), TreeSampler(proxy.pid)
    assert post(url, chat(model, small, 8))[0] == 200
    idle, proxy_idle = sampler.now(), proxy_sampler.now()
    data_url = "data:video/webm;base64," + base64.b64encode(Path(webm).read_bytes()).decode()
    requests = {
        "8000x8000 mp4, 32 frames": lambda: post(url, chat(model, huge, 32)),
        "6000x4000 mp4, 32 frames": lambda: post(url, chat(model, large, 32)),
        "1500-frame WebM, 32 frames": lambda: post(url, chat(model, webm, 32)),
        "the WebM as a data URL": lambda: post(url, chat(model, data_url, 32)),
        "4 x 6000x4000 at once": lambda: list(
            ThreadPoolExecutor(4).map(lambda _: post(url, chat(model, large, 32)), range(4))
        )[0],
        "200 MiB chunked body": lambda: chunked(url, 3200),
        "1 GiB chunked body": lambda: chunked(url, 16384),
        "JSON nested 100,000 deep": lambda: post(url, b"[" * 100_000 + b"]" * 100_000),
    }
    sizes = {"8000x8000": huge, "6000x4000": large, "WebM": webm}
    print("clip sizes: " + ", ".join(f"{k} {Path(v).stat().st_size / 1024:.0f} KB" for k, v in sizes.items()))
    limit = (
        "without vstar's body limit"
        if args.without_proxy_limit
        else f"body limit {body_limit(cfg.serve.max_video_bytes)}"
    )
    print(f"replica tree idle: {idle / MIB:.0f} MiB (pid {replica.pid}); proxy idle: {proxy_idle / MIB:.0f} MiB "
          f"(pid {proxy.pid}, {limit})\n")  # fmt: skip
    header = (
        f"{'request':<30}{'status':>7}{'s':>7}{'before MiB':>11}{'peak MiB':>10}{'above idle':>12}"
        f"{'proxy before':>14}{'peak':>7}{'rise':>7}  answer"
    )
    print(header + "\n" + "-" * (len(header) + 40))
    for name, send in requests.items():
        proxy_sampler.peak = proxy_before = proxy_sampler.now()
        (status, text), seconds, before, peak = sampler.measure(send)
        proxy_peak = proxy_sampler.peak
        print(
            f"{name:<30}{status:>7}{seconds:>7.1f}{before / MIB:>11.0f}{peak / MIB:>10.0f}{(peak - idle) / MIB:>12.0f}"
            f"{proxy_before / MIB:>14.0f}{proxy_peak / MIB:>7.0f}{(proxy_peak - proxy_before) / MIB:>7.0f}  {text[:60]}"
        )
    sampler.stop.set()
    proxy_sampler.stop.set()
    rserve.shutdown()
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
