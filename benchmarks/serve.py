"""Benchmark the serve app (`vstar.serve`) on CPU with the tiny VLM: requests/s and latency at a fixed concurrency.

Prints measured figures; it is not a test. Setup: 8 synthetic videos (`vstar.data.synth`: 48 frames, 112 px, about
5 KB each) and the tiny random Qwen2.5-VL (`vstar.models.tiny.build_tiny_vlm`) in a temporary folder, one local Ray
(`ray.init(num_cpus=2, include_dashboard=False)`, RAY_AUTH_MODE=disabled) and the app deployed by `serve()` on
127.0.0.1 with the default config (1 replica holding 1 CPU, transformers backend, batches of up to 8 requests waiting
up to 20 ms, 8 frames per video) and the videos' folder as the allowed root.

Each request: one user message with the video and a short question, greedy, `max_tokens` 32 with `ignore_eos`, so
every answer is exactly 32 tokens. `--concurrency` client threads each send their next request as soon as the last
one is answered (a closed loop), `--requests` in all per setting, after 4 untimed warm-up requests. Settings: the
video as a file path; as a data URL (base64 in the body); and streamed (`stream: true`, file path), where the time to
the first content chunk is shown as well. Latency is per request, client side, from sending to the last byte.
The clients run in this process and share the 2 cores with the proxy, the replica and the decoder.

Then the stall check (issue 27): small requests (file path, one client, `--requests` of them) alone, and again while
`--slow-downloads` requests (8) fetch a video from a local web server that trickles a byte every 0.2 s (each is
sent again when it times out, so that many are always in flight); their p50/p99 and the ratio loaded/unloaded.

    . .venv/bin/activate && python benchmarks/serve.py                    # about 1-2 minutes on 2 cores
    . .venv/bin/activate && python benchmarks/serve.py --concurrency 1 8 --requests 32
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

MAX_TOKENS = 32
QUESTION = "What shape moves, and where does it go?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body(model: str, video_url: str, stream: bool) -> bytes:
    content = [{"type": "video_url", "video_url": {"url": video_url}}, {"type": "text", "text": QUESTION}]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }
    return json.dumps(body).encode()


def send(url: str, body: bytes, stream: bool) -> tuple[float, float]:
    """(latency, time to the first content) in seconds; the request must succeed with MAX_TOKENS tokens."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = None
    with urllib.request.urlopen(request, timeout=300) as response:
        if not stream:
            reply = json.loads(response.read())
            assert reply["usage"]["completion_tokens"] == MAX_TOKENS, reply
            return time.perf_counter() - start, float("nan")
        for line in response:
            if (
                first is None
                and line.startswith(b"data: {")
                and b'"content": "' in line
                and b'"content": ""' not in line
            ):
                first = time.perf_counter() - start
    return time.perf_counter() - start, first if first is not None else float("nan")


def run_setting(url: str, bodies: list[bytes], stream: bool, concurrency: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: send(url, b, stream), bodies))
    wall = time.perf_counter() - start
    latency = np.array([r[0] for r in results])
    first = np.array([r[1] for r in results])
    return {
        "req/s": len(bodies) / wall,
        "tokens/s": len(bodies) * MAX_TOKENS / wall,
        "p50": np.percentile(latency, 50),
        "p90": np.percentile(latency, 90),
        "p99": np.percentile(latency, 99),
        "first p50": np.nanpercentile(first, 50) if stream else float("nan"),
    }


def trickling_server() -> tuple[str, object]:
    """A local web server whose every GET sends a byte every 0.2 s for 60 s (a slow, or hostile, video host)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(300):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/slow.mp4", httpd


def stall_check(url: str, model: str, small: list[bytes], slow_url: str, slow: int, requests: int) -> None:
    """Small requests' latency alone and with `slow` trickling downloads always in flight."""
    import threading

    def latencies() -> np.ndarray:
        return np.array([send(url, small[i % len(small)], False)[0] for i in range(requests)])

    alone = latencies()
    stop = threading.Event()

    def keep_trickling():
        body = request_body(model, slow_url, False)
        while not stop.is_set():
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            # a 504 (its deadline passed: send the next one), or the server going away at the end
            with contextlib.suppress(OSError, http.client.HTTPException):
                urllib.request.urlopen(request, timeout=300).read()

    threads = [threading.Thread(target=keep_trickling, daemon=True) for _ in range(slow)]
    for t in threads:
        t.start()
    time.sleep(2.0)  # all of them fetching
    loaded = latencies()
    stop.set()
    print(
        f"\nsmall requests (file path, 1 client, {requests} each), alone and with {slow} trickling downloads in flight"
    )
    print(f"{'':<24}{'p50 s':>8}{'p99 s':>8}")
    print(f"{'alone':<24}{np.percentile(alone, 50):>8.3f}{np.percentile(alone, 99):>8.3f}")
    print(f"{f'{slow} slow downloads':<24}{np.percentile(loaded, 50):>8.3f}{np.percentile(loaded, 99):>8.3f}")
    print(f"p99 loaded / alone: {np.percentile(loaded, 99) / np.percentile(alone, 99):.2f}x (target: under 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="client threads (default: 1 8)")
    parser.add_argument("--requests", type=int, default=48, help="requests per setting (default: 48)")
    parser.add_argument(
        "--slow-downloads", type=int, default=8, help="trickling downloads in flight in the stall check (default: 8)"
    )
    args = parser.parse_args()

    import ray
    from ray import serve as rserve

    from vstar.config import load_config
    from vstar.data.synth import synthesize
    from vstar.models import build_tiny_vlm
    from vstar.serve.app import serve

    work = Path(tempfile.mkdtemp(prefix="vstar-bench-serve-"))
    synthesize(work / "synth", num_videos=8, seed=0)
    videos = sorted((work / "synth" / "videos").glob("*.mp4"))
    model = str(build_tiny_vlm(work / "tiny"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    slow_url, httpd = trickling_server()
    overrides = [f"serve.port={free_port()}", f"serve.allowed_roots=[{work}]", "serve.allowed_domains=[127.0.0.1]"]
    cfg = load_config(None, [*overrides, "serve.request_timeout_s=20"])
    base = serve(model, cfg, blocking=False)
    print(f"serve() until the replica is ready: {time.perf_counter() - start:.1f} s")
    url = f"{base}/v1/chat/completions"
    data_urls = ["data:video/mp4;base64," + base64.b64encode(v.read_bytes()).decode() for v in videos]
    settings = {
        "file path": ([request_body(model, str(v), False) for v in videos], False),
        "data URL": ([request_body(model, d, False) for d in data_urls], False),
        "stream, path": ([request_body(model, str(v), True) for v in videos], True),
    }
    for bodies, stream in settings.values():
        for body in bodies[:4]:
            send(url, body, stream)

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {MAX_TOKENS} tokens a request")
    header = f"{'setting':<14}{'clients':>8}{'req/s':>8}{'tokens/s':>10}{'p50 s':>8}{'p90 s':>8}{'p99 s':>8}{'first p50':>11}"
    print(header)
    print("-" * len(header))
    for name, (bodies, stream) in settings.items():
        for concurrency in args.concurrency:
            batch = [bodies[i % len(bodies)] for i in range(args.requests)]
            r = run_setting(url, batch, stream, concurrency)
            first = f"{r['first p50']:.3f}" if stream else "-"
            print(
                f"{name:<14}{concurrency:>8}{r['req/s']:>8.1f}{r['tokens/s']:>10.0f}"
                f"{r['p50']:>8.3f}{r['p90']:>8.3f}{r['p99']:>8.3f}{first:>11}"
            )
    small = settings["file path"][0]
    stall_check(url, model, small, slow_url, args.slow_downloads, args.requests)
    rserve.shutdown()
    ray.shutdown()
    httpd.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
