"""The serve app for real: Ray Serve on 127.0.0.1 with the tiny VLM, called with the official `openai` client
(chat with a video, streaming and not) and with raw HTTP for every kind of bad request."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from http_probe import chunked_post  # tests/http_probe.py
from PIL import Image

try:
    import openai
except ImportError:  # the vLLM environment (.ci/vllm_env.sh) has no openai: only the vllm test runs there
    openai = None

QUESTION = "What shape moves, and where does it go?"
TIMEOUT_S = 6.0  # serve.request_timeout_s here: far above a 16-token answer, far below an 8000-token one
MAX_BYTES = 200_000
MAX_QUEUED = 8  # requests the proxy holds past the replica's 32 (4 x serve.max_batch_size); above a burst of 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def media(synth_samples, tmp_path_factory):
    """The allowed root: a good clip, a long one, a damaged one, an empty one, one over the byte limit and one whose
    frames are over the server's `data.max_decode_pixels`; a small PNG, one over that limit and a damaged one."""
    from vstar.data.synth import write_video

    root = tmp_path_factory.mktemp("served")
    good = root / "clip.mp4"
    good.write_bytes(Path(synth_samples[0].video).read_bytes())
    rng = np.random.default_rng(0)
    write_video(root / "long.mp4", rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8), fps=2.0)  # 15 s
    (root / "damaged.mp4").write_bytes(good.read_bytes()[:200] + rng.bytes(3000))
    (root / "empty.mp4").write_bytes(b"")
    (root / "big.mp4").write_bytes(rng.bytes(MAX_BYTES + 1))
    write_video(root / "wide.mp4", np.zeros((2, 240, 320, 3), np.uint8), fps=2.0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / "picture.png")
    Image.fromarray(np.zeros((240, 320, 3), np.uint8)).save(root / "wide.png")
    (root / "damaged.png").write_bytes((root / "picture.png").read_bytes()[:100])
    return root


@pytest.fixture(scope="module")
def server(ray_local, tiny_vlm_dir, media):
    if openai is None:
        pytest.skip("the openai client is not installed")
    from ray import serve as rserve

    from vstar.config import load_config
    from vstar.serve.app import serve

    cfg = load_config(
        None,
        [
            f"serve.port={free_port()}",
            f"serve.allowed_roots=[{media}]",
            "serve.allowed_domains=[127.0.0.1]",
            f"serve.max_video_bytes={MAX_BYTES}",
            "serve.max_frames=16",
            "serve.max_duration_s=10",
            f"serve.request_timeout_s={TIMEOUT_S}",
            f"serve.max_queued_requests={MAX_QUEUED}",
            "serve.retry_after_s=3",
            "data.max_decode_pixels=50000",  # the good clip's 112x112 passes, wide.mp4's 320x240 does not
        ],
    )
    from vstar.serve.proxy import LIMIT_ENV, body_limit

    assert os.environ[LIMIT_ENV] == str(body_limit(MAX_BYTES)), "conftest's Ray gave Serve's proxy another limit"
    url = serve(str(tiny_vlm_dir), cfg, blocking=False)
    yield url
    rserve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def video_message(url: str, question: str = QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}],
        }
    ]


def data_url(path: Path, kind: str = "video/mp4") -> str:
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def post(url: str, body, timeout: float = 60) -> tuple[int, dict]:
    """Raw HTTP: `body` bytes as they are, anything else as JSON. Returns (status, parsed JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def chat_body(model: str, url: str, **extra) -> dict:
    return {"model": model, "messages": video_message(url), "max_tokens": 8, "temperature": 0, **extra}


def image_message(url: str, question: str = "What is in the picture?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}],
        }
    ]


def image_body(model: str, url: str, **extra) -> dict:
    return {"model": model, "messages": image_message(url), "max_tokens": 8, "temperature": 0, **extra}


def test_health_and_models(server, client, tiny_vlm_dir):
    with urllib.request.urlopen(f"{server}/health", timeout=30) as response:
        assert json.loads(response.read()) == {"status": "ok", "model": str(tiny_vlm_dir)}
    assert [m.id for m in client.models.list().data] == [str(tiny_vlm_dir)]


def test_chat_with_a_data_url_answers_as_the_generation_backend_does(client, tiny_vlm_dir, media):
    """Same frames (the shared sampler), same chat template, same greedy tokens as `HFBackend`."""
    from vstar.data.frames import sample_frames
    from vstar.generate.backends import HFBackend
    from vstar.generate.sampling import Sampling

    reply = client.chat.completions.create(
        model=str(tiny_vlm_dir), messages=video_message(data_url(media / "clip.mp4")), max_tokens=16, temperature=0
    )
    frames = sample_frames(str(media / "clip.mp4"), 8)
    expected = HFBackend(str(tiny_vlm_dir), Sampling.greedy(16)).generate([QUESTION], [frames.array], [frames.meta])[0]
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.candidates[0]
    assert choice.finish_reason == ("stop" if expected.candidate_tokens[0] < 16 else "length")
    assert reply.usage.completion_tokens == expected.candidate_tokens[0]
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.model == str(tiny_vlm_dir) and reply.object == "chat.completion"


def test_streaming_with_a_file_path_gives_the_same_text(client, tiny_vlm_dir, media):
    # 200 tokens (ignore_eos): long enough to arrive in several pieces (steps that pile up are sent as one)
    kwargs = dict(
        model=str(tiny_vlm_dir),
        messages=video_message(str(media / "clip.mp4")),
        max_tokens=200,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "streamed in pieces"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_stream_is_server_sent_events_ending_with_done(server, tiny_vlm_dir, media):
    body = chat_body(str(tiny_vlm_dir), str(media / "clip.mp4"), stream=True)
    request = urllib.request.Request(
        f"{server}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in response.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"


def greedy_reference(model_dir: Path, messages: list[dict], max_tokens: int, image=None) -> tuple[str, int, int]:
    """transformers alone (no engine): the greedy text, completion tokens (end of sequence counted) and prompt tokens
    of one chat-templated prompt, with its image if any."""
    import torch

    from vstar.generate.backends import load_hf

    model, processor, _, eos = load_hf(str(model_dir), max_frame_pixels=300 * 28 * 28)  # data.max_frame_pixels
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[image] if image is not None else None, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()
    length = next((i + 1 for i, t in enumerate(new) if t in eos), len(new))
    return processor.decode(new, skip_special_tokens=True), length, inputs["input_ids"].shape[1]


def test_a_text_only_chat_is_answered_without_media(client, tiny_vlm_dir):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What moves, and where?"}]
    reply = client.chat.completions.create(model=str(tiny_vlm_dir), messages=messages, max_tokens=12, temperature=0)
    text, tokens, prompt_tokens = greedy_reference(tiny_vlm_dir, messages, 12)
    assert reply.choices[0].message.content == text
    assert (reply.usage.completion_tokens, reply.usage.prompt_tokens) == (tokens, prompt_tokens)


def test_an_image_chat_answers_about_the_image(client, server, tiny_vlm_dir, media):
    """A PNG as a data URL and as an allowed path: the same answer as transformers given that image."""
    image = Image.open(media / "picture.png").convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    text, tokens, prompt_tokens = greedy_reference(tiny_vlm_dir, messages, 12, image)
    for url in (data_url(media / "picture.png", "image/png"), str(media / "picture.png")):
        reply = client.chat.completions.create(
            model=str(tiny_vlm_dir), messages=image_message(url), max_tokens=12, temperature=0
        )
        assert reply.choices[0].message.content == text, url[:30]
        assert (reply.usage.completion_tokens, reply.usage.prompt_tokens) == (tokens, prompt_tokens)
    text_only = client.chat.completions.create(
        model=str(tiny_vlm_dir), messages=[{"role": "user", "content": "What is in the picture?"}], max_tokens=12
    )
    assert text_only.usage.prompt_tokens < prompt_tokens  # the image's tokens were in the prompt


def test_n_choices_and_seeds_as_vllm_draws_them(client, tiny_vlm_dir, media):
    """n=3 gives choices 0, 1, 2; with a seed, choice j is what seed + j gives alone, streamed or not; the same seed
    gives the same text again and another seed another text."""
    kwargs = dict(model=str(tiny_vlm_dir), messages=video_message(str(media / "clip.mp4")), max_tokens=12)
    greedy = client.chat.completions.create(**kwargs, n=3, temperature=0)
    assert [c.index for c in greedy.choices] == [0, 1, 2]
    assert len({c.message.content for c in greedy.choices}) == 1  # greedy: three times the same answer
    assert greedy.usage.completion_tokens == 3 * 12

    sampled = client.chat.completions.create(**kwargs, n=3, temperature=1.0, seed=11)
    texts = [c.message.content for c in sampled.choices]
    assert len(set(texts)) == 3
    alone = [client.chat.completions.create(**kwargs, temperature=1.0, seed=11 + j) for j in range(3)]
    assert [a.choices[0].message.content for a in alone] == texts
    assert sampled.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    again = client.chat.completions.create(**kwargs, temperature=1.0, seed=11)
    assert again.choices[0].message.content == texts[0]
    other = client.chat.completions.create(**kwargs, temperature=1.0, seed=12345)
    assert other.choices[0].message.content not in texts

    chunks = list(
        client.chat.completions.create(
            **kwargs, n=3, temperature=1.0, seed=11, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == j)
                for j in range(3)]  # fmt: skip
    assert streamed == texts
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    finals = sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason)
    assert roles == finals == [0, 1, 2]
    assert chunks[-1].usage.completion_tokens == sampled.usage.completion_tokens


def test_stop_ends_the_text_before_the_first_stop_string(client, server, tiny_vlm_dir, media):
    kwargs = dict(model=str(tiny_vlm_dir), messages=video_message(str(media / "clip.mp4")), temperature=0)
    whole = client.chat.completions.create(**kwargs, max_tokens=24).choices[0].message.content
    words = whole.split()
    assert len(words) >= 6, whole
    stop = " ".join(words[3:5])  # two words from the middle: a stop string that certainly occurs
    expected = whole[: whole.find(stop)]
    reply = client.chat.completions.create(**kwargs, max_tokens=24, stop=[stop, "never said"])
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 24
    chunks = list(client.chat.completions.create(**kwargs, max_tokens=24, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    unmet = client.chat.completions.create(**kwargs, max_tokens=24, stop="never said")
    assert unmet.choices[0].message.content == whole and unmet.choices[0].finish_reason == "length"


def bad_requests(model: str, media: Path) -> list[tuple[str, object, int, str | None, str]]:
    """(case, body, status, error.param, a piece of error.message)."""
    clip = str(media / "clip.mp4")
    two_videos = video_message(clip)
    two_videos[0]["content"].append({"type": "video_url", "video_url": {"url": clip}})
    video_and_image = video_message(clip)
    video_and_image[0]["content"].append({"type": "image_url", "image_url": {"url": str(media / "picture.png")}})
    audio = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]
    return [
        ("malformed JSON", b'{"model": "m", "messages": [', 400, None, "not valid JSON"),
        ("not an object", b"[1, 2]", 400, None, "must be a JSON object"),
        ("no model", {"messages": video_message(clip)}, 400, "model", "missing required field 'model'"),
        ("no messages", {"model": model}, 400, "messages", "missing required field 'messages'"),
        ("empty messages", {"model": model, "messages": []}, 400, "messages", "non-empty list"),
        ("bad role", {"model": model, "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0]", "role"),
        ("unknown model", chat_body("gpt-9", clip), 404, "model", "not served here"),
        ("two videos", {"model": model, "messages": two_videos}, 400, "messages[0].content[2]", "2 media parts"),
        (
            "video and image",
            {"model": model, "messages": video_and_image},
            400,
            "messages[0].content[2]",
            "image_url at messages[0]",
        ),
        ("audio part", {"model": model, "messages": audio}, 400, "messages[0].content[0]", "image_url part"),
        ("n over a batch", chat_body(model, clip, n=9), 400, "n", "must be in [1, 8]"),
        ("seed not an integer", chat_body(model, clip, seed=1.5), 400, "seed", "must be an integer"),
        ("five stop strings", chat_body(model, clip, stop=list("abcde")), 400, "stop", "up to 4"),
        ("logprobs", chat_body(model, clip, logprobs=True, top_logprobs=2), 400, "logprobs", "ignored): logprobs, top"),
        ("an unknown field", chat_body(model, clip, best_of=4), 400, "best_of", "would be ignored"),
        (
            "vLLM's frame count",
            chat_body(model, clip, media_io_kwargs={"video": {"num_frames": 17}}),
            400,
            "num_frames",
            "must be in [1, 16]",
        ),
        (
            "media_io_kwargs fps",
            chat_body(model, clip, media_io_kwargs={"video": {"fps": 2}}),
            400,
            "media_io_kwargs",
            "only",
        ),  # fmt: skip
        ("max_tokens=0", chat_body(model, clip, max_tokens=0), 400, "max_tokens", "must be in"),
        ("temperature=5", chat_body(model, clip, temperature=5), 400, "temperature", "must be in"),
        ("too many frames", chat_body(model, clip, num_frames=17), 400, "num_frames", "must be in [1, 16]"),
        ("path outside roots", chat_body(model, "/etc/passwd"), 403, "messages", "allowed root"),
        ("escape with ..", chat_body(model, f"{media}/../../etc/hostname"), 403, "messages", "allowed root"),
        ("file:// outside roots", chat_body(model, "file:///etc/passwd"), 403, "messages", "allowed root"),
        ("missing file", chat_body(model, str(media / "nope.mp4")), 400, "messages", "not a file"),
        ("host not allow-listed", chat_body(model, "https://example.com/a.mp4"), 403, "messages", "allowed_domains"),
        (
            "localhost not allow-listed",
            chat_body(model, "http://localhost:1/a.mp4"),
            403,
            "messages",
            "allowed_domains",
        ),
        ("unsupported scheme", chat_body(model, "ftp://127.0.0.1/a.mp4"), 400, "messages", "scheme"),
        ("bad data URL", chat_body(model, "data:text/plain,hello"), 400, "messages", "data URL"),
        ("bad base64", chat_body(model, "data:video/mp4;base64,@@@@"), 400, "messages", "base64"),
        ("too large data URL", chat_body(model, data_url(media / "big.mp4")), 413, "messages", "limit is 200000"),
        ("too large file", chat_body(model, str(media / "big.mp4")), 413, "messages", "limit is 200000"),
        ("too large body", chat_body(model, "data:video/mp4;base64," + "A" * 1_600_000), 413, None, "the request has"),
        ("too long video", chat_body(model, str(media / "long.mp4")), 400, "messages", "lasts 15.0 s"),
        ("damaged video", chat_body(model, str(media / "damaged.mp4")), 422, "messages", "could not be decoded"),
        ("damaged image", image_body(model, str(media / "damaged.png")), 422, "messages", "image could not be decoded"),
        ("image too large", image_body(model, str(media / "wide.png")), 422, "messages", "320x240 pixels (76,800)"),
        ("image outside roots", image_body(model, "/etc/hostname"), 403, "messages", "allowed root"),
        ("empty video", chat_body(model, str(media / "empty.mp4")), 422, "messages", "empty file"),
        ("frames too large", chat_body(model, str(media / "wide.mp4")), 422, "messages", "320x240 frames (76,800"),
        (
            "damaged data URL",
            chat_body(model, data_url(media / "damaged.mp4")),
            422,
            "messages",
            "could not be decoded",
        ),
    ]


def test_bad_requests_get_a_4xx_with_an_openai_error_and_the_server_serves_on(server, tiny_vlm_dir, media):
    for case, body, status, param, message in bad_requests(str(tiny_vlm_dir), media):
        got, reply = post(f"{server}/v1/chat/completions", body)
        assert got == status, (case, reply)
        error = reply["error"]
        assert set(error) == {"message", "type", "param", "code"}, case
        assert error["param"] == param and message in error["message"], (case, error)
        assert error["type"] == {403: "permission_error", 404: "not_found_error"}.get(status, "invalid_request_error")
    got, reply = post(f"{server}/v1/nothing-here", {})
    assert got == 404 and "Not Found" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="would be ignored[)]: logprobs"):
        openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model=str(tiny_vlm_dir), messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    # fields at the value that changes nothing pass, and vLLM's frame count is honoured
    neutral = dict(stop=None, seed=None, user="u", presence_penalty=0, media_io_kwargs={"video": {"num_frames": 4}})
    got, reply = post(f"{server}/v1/chat/completions", chat_body(str(tiny_vlm_dir), str(media / "clip.mp4"), **neutral))
    assert got == 200, reply
    octets = data_url(media / "clip.mp4").replace("video/mp4", "application/octet-stream")
    got, reply = post(f"{server}/v1/chat/completions", chat_body(str(tiny_vlm_dir), octets))
    assert got == 200 and reply["usage"]["completion_tokens"] == 8


@pytest.fixture(scope="module")
def web(media):
    """A local web server over the allowed root, with a redirect to elsewhere and a missing file."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(media), **kwargs)

        def do_GET(self):
            hops = {"/redirect.mp4": "http://example.com/x.mp4", "/hop.mp4": "/clip.mp4",
                    "/to-metadata.mp4": "http://169.254.169.254/latest/meta-data/", "/loop.mp4": "/loop.mp4"}  # fmt: skip
            if self.path in hops:
                self.send_response(302)
                self.send_header("Location", hops[self.path])
                self.end_headers()
                return
            if self.path == "/slow.mp4":  # a byte every 0.2 s, for ever: only an overall deadline stops it
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(100):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_an_allow_listed_host_is_fetched_with_the_byte_limit(server, tiny_vlm_dir, web):
    model = str(tiny_vlm_dir)
    got, reply = post(f"{server}/v1/chat/completions", chat_body(model, f"{web}/clip.mp4"))
    assert got == 200 and reply["choices"][0]["message"]["content"]
    for path, status, message in [
        ("big.mp4", 413, "limit is 200000"),
        ("nope.mp4", 400, "HTTP 404"),
        ("redirect.mp4", 403, "'example.com' is not in serve.allowed_domains"),  # followed, and checked again
    ]:
        got, reply = post(f"{server}/v1/chat/completions", chat_body(model, f"{web}/{path}"))
        assert got == status and message in reply["error"]["message"], (path, reply)


def test_a_fetch_goes_to_public_hosts_only_and_keeps_its_deadline(web, media):
    """The fetcher alone (no server): loopback, private and metadata addresses refused unless allow-listed,
    redirects followed and checked again, a slow sender cut at the deadline. (A public host cannot be reached from
    this machine: that case is the address rule, tested on addresses.)"""
    from vstar.serve.protocol import APIError
    from vstar.serve.video import fetch, public_address

    for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"):  # fmt: skip
        assert not public_address(ip), ip
    assert public_address("8.8.8.8") and public_address("2001:4860:4860::8888")
    with pytest.raises(APIError, match="resolves to a non-public address") as e:
        fetch(f"{web}/clip.mp4", 10**7, 5.0)  # nothing allow-listed: the loopback web server is refused
    assert e.value.status == 403
    assert fetch(f"{web}/hop.mp4", 10**7, 5.0, ["127.0.0.1"]) == (media / "clip.mp4").read_bytes()
    with pytest.raises(APIError, match="'169.254.169.254' is not in serve.allowed_domains"):
        fetch(f"{web}/to-metadata.mp4", 10**7, 5.0, ["127.0.0.1"])
    with pytest.raises(APIError, match="more than 5 redirects"):
        fetch(f"{web}/loop.mp4", 10**7, 5.0, ["127.0.0.1"])
    start = time.monotonic()
    with pytest.raises(APIError, match="took longer") as e:
        fetch(f"{web}/slow.mp4", 10**7, 1.0, ["127.0.0.1"])
    assert e.value.status == 504 and time.monotonic() - start < 2.5


def test_concurrent_requests_with_a_bad_one_all_complete(server, tiny_vlm_dir, media):
    model, clip = str(tiny_vlm_dir), str(media / "clip.mp4")
    bodies = [chat_body(model, clip, max_tokens=10) for _ in range(6)]
    bodies[2] = chat_body(model, str(media / "damaged.mp4"))
    bodies[4] = chat_body(model, clip, max_tokens=5, temperature=0.8)  # another sampling setting in the batch
    with ThreadPoolExecutor(len(bodies)) as pool:
        results = list(pool.map(lambda b: post(f"{server}/v1/chat/completions", b), bodies))
    assert results[2][0] == 422 and "could not be decoded" in results[2][1]["error"]["message"]
    good = [r for i, r in enumerate(results) if i != 2]
    assert [status for status, _ in good] == [200] * 5
    greedy_tokens = [r["usage"]["completion_tokens"] for i, (_, r) in enumerate(results) if i not in (2, 4)]
    assert greedy_tokens == [10] * 4  # the tiny random model never ends on its own when greedy
    assert 1 <= results[4][1]["usage"]["completion_tokens"] <= 5
    greedy = {r["choices"][0]["message"]["content"] for i, (_, r) in enumerate(results) if i not in (2, 4)}
    assert len(greedy) == 1, "the same greedy request gives the same answer, whatever it was batched with"


def test_the_proxy_limit_passes_no_more_than_the_limit_to_the_app():
    """`BodyLimit` on a real uvicorn server in front of an app that reads the whole body: a chunked body past the
    limit is a 413 from the limit and the app receives at most the limit (in Serve, what reaches the proxy's and the
    replica's queues); a declared length past it never reaches the app; a body under it passes whole."""
    import asyncio

    import uvicorn

    from vstar.serve.proxy import BodyLimit

    got = []  # bytes each request brought to the app

    async def app(scope, receive, send):
        n, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            n, more = n + len(message.get("body", b"")), message.get("more_body", False)
        got.append(n)
        body = json.dumps({"bytes_read": n}).encode()  # 20 bytes or more: chunked_post reads that far
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    limit, port = 1 << 20, free_port()
    server = uvicorn.Server(uvicorn.Config(BodyLimit(app, limit), port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        status, body = chunked_post(url, pieces=320, piece_bytes=1 << 16)  # 20 MiB offered
        assert status == 413 and f"more than {limit} bytes".encode() in body, body[:300]
        deadline = time.monotonic() + 5  # the 413 can reach the client before the app has been told the client left
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got, "the app never finished the refused request"
        assert got[-1] <= limit, f"the app read {got[-1]} bytes past the limit"
        before = len(got)
        status, reply = post(url, b"x" * (limit + 1))
        assert status == 413 and f"{limit + 1} bytes" in reply["error"]["message"]
        assert len(got) == before, "a declared length past the limit reached the app"
        status, body = chunked_post(url, pieces=4, piece_bytes=1 << 16)
        assert status == 200 and json.loads(body) == {"bytes_read": 4 << 16}
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.hostile
def test_hostile_bodies_are_refused_early_and_the_server_serves_on(server, tiny_vlm_dir, media):
    """A chunked body far over the limit (no Content-Length to check) is a 413 once the limit is passed, not
    after the whole of it; deeply nested JSON is a 400, not a 500 RecursionError."""
    url = f"{server}/v1/chat/completions"
    start = time.monotonic()
    status, body = chunked_post(url, pieces=3200, piece_bytes=1 << 16)  # 200 MiB offered
    assert status == 413 and b"the request has more than" in body, body[:300]
    assert time.monotonic() - start < 30
    got, reply = post(url, b"[" * 100_000 + b"]" * 100_000)
    assert got == 400 and "nested too deeply" in reply["error"]["message"], reply
    got, reply = post(url, chat_body(str(tiny_vlm_dir), str(media / "clip.mp4")))
    assert got == 200, reply


@pytest.mark.hostile
def test_slow_downloads_hold_back_no_other_request_and_a_full_queue_says_retry(server, tiny_vlm_dir, media, web):
    """8 downloads that trickle a byte every 0.2 s (each until its 6 s deadline) while a small request is answered;
    then more slow requests than the replica and the proxy's queue take: the rest get 429 with Retry-After at once."""
    model, url = str(tiny_vlm_dir), f"{server}/v1/chat/completions"
    slow = chat_body(model, f"{web}/slow.mp4")
    with ThreadPoolExecutor(8) as pool:
        trickling = [pool.submit(post, url, slow) for _ in range(8)]
        time.sleep(1.0)  # all 8 are fetching
        start = time.monotonic()
        got, reply = post(url, chat_body(model, str(media / "clip.mp4")))
        took = time.monotonic() - start
        assert got == 200 and not any(f.done() for f in trickling), (got, reply)
        assert took < TIMEOUT_S - 1.5, f"the small request waited {took:.1f} s behind the slow downloads"
        assert [f.result()[0] for f in trickling] == [504] * 8

    def raw(body):
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Retry-After")

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(raw, [slow] * 64))
    refused = [r for r in results if r[0] == 429]
    assert refused and all(after == "3" for _, after in refused), results
    assert {status for status, _ in results} <= {429, 504}
    got, reply = post(url, chat_body(model, str(media / "clip.mp4")))
    assert got == 200, reply


def test_a_request_past_the_timeout_gets_504_and_the_server_serves_on(server, tiny_vlm_dir, media):
    model, clip = str(tiny_vlm_dir), str(media / "clip.mp4")
    start = time.monotonic()
    got, reply = post(f"{server}/v1/chat/completions", chat_body(model, clip, max_tokens=8000, ignore_eos=True))
    assert got == 504 and reply["error"]["type"] == "timeout_error", reply
    assert time.monotonic() - start < TIMEOUT_S + 5
    start = time.monotonic()
    got, reply = post(f"{server}/v1/chat/completions", chat_body(model, clip))
    assert got == 200 and reply["usage"]["completion_tokens"] == 8
    assert time.monotonic() - start < TIMEOUT_S, "the timed-out generation was stopped, not left running"


def test_a_stream_past_the_timeout_ends_with_an_error_event(client, tiny_vlm_dir, media):
    stream = client.chat.completions.create(
        model=str(tiny_vlm_dir),
        messages=video_message(str(media / "clip.mp4")),
        max_tokens=8000,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    pieces = []
    with pytest.raises(openai.APIError, match="request_timeout_s"):
        for c in stream:
            pieces.append(c.choices[0].delta.content)
    assert any(pieces), "text was streamed before the timeout"


def test_a_client_that_leaves_mid_stream_stops_its_generation(server, tiny_vlm_dir, media):
    model, clip = str(tiny_vlm_dir), str(media / "clip.mp4")
    body = chat_body(model, clip, max_tokens=8000, ignore_eos=True, stream=True)
    request = urllib.request.Request(
        f"{server}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    response = urllib.request.urlopen(request, timeout=60)
    assert response.readline().startswith(b"data: ")
    response.close()
    # Had the 8000 tokens gone on, this request would wait for their batch to end and time out.
    got, reply = post(f"{server}/v1/chat/completions", chat_body(model, clip))
    assert got == 200 and reply["usage"]["completion_tokens"] == 8


def test_a_run_directory_serves_its_best_cycle(tmp_path, caplog):
    from vstar.serve.app import resolve_model

    run = tmp_path / "run"
    for k in (1, 2, 3):
        (run / f"cycle_{k}" / "model").mkdir(parents=True)
    lines = [
        {"cycle": 0, "model": "base-model", "eval": {"accuracy": 0.2}},
        {"cycle": 1, "eval": {"accuracy": 0.5}},
        {"cycle": 2, "eval": {"accuracy": 0.4}},
        {"cycle": 3},  # not evaluated (stopped part way)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level("INFO", logger="vstar"):
        assert resolve_model(str(run)) == str(run / "cycle_1" / "model")
    assert "serving cycle 1" in caplog.text
    lines[0]["eval"]["accuracy"] = 0.9
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert resolve_model(str(run)) == "base-model"
    assert resolve_model("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    (run / "metrics.jsonl").write_text(json.dumps({"cycle": 0, "model": "m"}) + "\n")
    with pytest.raises(ValueError, match="no evaluated cycle"):
        resolve_model(str(run))


def test_serve_yaml_is_a_valid_serve_deploy_config(tiny_vlm_dir):
    """What `serve deploy jobs/serve.yaml` checks (Ray Serve's own schema), then the app its builder makes."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema
    from ray.serve.scripts import import_attr

    path = Path(__file__).parents[1] / "jobs" / "serve.yaml"
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app,) = config.applications
    assert config.http_options.host == "127.0.0.1" or config.http_options.host == "0.0.0.0"
    args = {**app.args, "model": str(tiny_vlm_dir), "config": None}
    built = call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), args)
    assert isinstance(built, Application)
    with pytest.raises(ValueError, match="app args take"):
        call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), {"modle": "x"})


def test_jobs_that_differ_only_in_per_row_settings_share_one_generate_call():
    """The HF engine's groups: the token limit, ignore_eos, the stop strings and the seed hold per row; temperature
    and top_p need a call of their own."""
    from vstar.generate.sampling import Sampling
    from vstar.serve.engine import _shared

    greedy = Sampling(10, seed=None)
    assert _shared(greedy) == _shared(Sampling(5, seed=None, ignore_eos=True, stop=("END",)))
    assert _shared(Sampling(10, temperature=0.8, seed=1)) == _shared(Sampling(3, temperature=0.8, seed=None))
    assert _shared(greedy) == _shared(Sampling(10, temperature=0, top_p=0.5, seed=None))  # top_p: greedy anyway
    assert _shared(greedy) != _shared(Sampling(10, temperature=0.8, seed=None))
    assert _shared(Sampling(10, temperature=0.8, top_p=0.5)) != _shared(Sampling(10, temperature=0.8, top_p=0.9))


def parse(**fields):
    from vstar.config import DataConfig, GenerateConfig
    from vstar.serve.protocol import parse_chat_request

    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return parse_chat_request(json.dumps(body).encode(), "m", GenerateConfig(), DataConfig(), 16, 8)


def test_the_protocol_reads_media_choices_seeds_and_stop_strings():
    from vstar.serve.protocol import APIError

    text = parse()
    assert (text.video_url, text.image_url, text.n, text.messages) == (
        None,
        None,
        1,
        [{"role": "user", "content": "Hi"}],
    )
    assert text.sampling.seed is None and text.choice(2) == text.sampling  # unseeded: every choice draws anew
    image = parse(messages=image_message("data:image/png;base64,AA==", "Which?"))
    assert image.image_url == "data:image/png;base64,AA==" and image.video_url is None
    assert image.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Which?"}]
    auto = image_message("/x.png")
    auto[0]["content"][0]["image_url"]["detail"] = "auto"
    assert parse(messages=auto).image_url == "/x.png"
    seeded = parse(n=8, seed=-3, temperature=1, stop=["a", "b", "c", "d"])
    assert [seeded.choice(j).seed for j in (0, 7)] == [-3, 4] and seeded.sampling.stop == ("a", "b", "c", "d")
    assert parse(stop=None).sampling.stop == parse(stop="").sampling.stop == ()
    high = image_message("/x.png")
    high[0]["content"][0]["image_url"]["detail"] = "high"
    for fields, param, message in [
        ({"messages": high}, "messages[0].content[0]", "detail 'high'"),
        ({"n": 0}, "n", "must be in [1, 8]"),
        ({"n": 2.0}, "n", "must be an integer"),
        ({"seed": True}, "seed", "must be an integer"),
        ({"seed": 2**63}, "seed", "must be in"),
        ({"stop": 3}, "stop", "a string or a list"),
        ({"stop": [None]}, "stop", "a string or a list"),
        ({"best_of": 2, "n": 2}, "best_of", "would be ignored): best_of"),
    ]:
        with pytest.raises(APIError) as e:
            parse(**fields)
        assert (e.value.status, e.value.param) == (400, param) and message in e.value.message, (fields, e.value)


class Pieces:
    """A tokenizer whose token i decodes to PIECES[i]."""

    PIECES = ["The ", "cat E", "N", "D", " more", "E", "X"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.PIECES[i] for i in ids)


def test_a_streamed_row_holds_back_what_may_start_a_stop_string():
    """The HF engine's row: "E", then "EN" wait (they may begin "END"); "END" ends the text before it, and text that
    turned out not to be a stop string is sent on."""
    from vstar.generate.sampling import Sampling
    from vstar.serve.engine import Job, _Row

    def run(tokens, max_tokens=10):
        row = _Row(Pieces(), 5, Job("p", Sampling(max_tokens, seed=None, stop=("END", "cat X"))), eos={99})
        return [(d.text, d.finish_reason) for d in map(row.add, tokens)]

    assert run([0, 1, 2, 3, 4]) == [("The ", None), ("cat ", None), ("", None), ("", "stop"), ("", None)]
    assert run([0, 5, 6, 99]) == [("The ", None), ("", None), ("EX", None), ("", "stop")]
    assert run([0, 1], max_tokens=2) == [("The ", None), ("cat E", "length")]  # the held "E" comes at the end
    assert run([0, 1, 6]) == [("The ", None), ("cat ", None), ("EX", None)]


@pytest.mark.vllm
def test_vllm_engine_honours_each_jobs_settings_and_matches_transformers(tiny_vlm_dir, media):
    """vLLM's async engine as serving runs it: each job its own request, streamed as the engine produces it; a short
    job finishes while a long one is still generating (continuous batching, no batch waits for its slowest job)."""
    pytest.importorskip("vllm", reason="vLLM is not installed here (see .ci/vllm_env.sh)")
    import asyncio

    from vstar.data.frames import sample_frames
    from vstar.generate.sampling import Sampling
    from vstar.serve.engine import HFEngine, Job, VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    frames = sample_frames(str(media / "clip.mp4"), 8)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}]
    hf = HFEngine(str(tiny_vlm_dir), dtype="float32")
    vllm_engine = VLLMEngine(str(tiny_vlm_dir), dtype="float32", max_model_len=2048, enforce_eager=True)
    prompt = vllm_engine.prompt(messages)
    assert prompt == hf.prompt(messages)
    loop = asyncio.new_event_loop()

    def run(jobs):
        """Each job's deltas, and when (in order of arrival over all jobs) its last one came."""
        arrivals = []

        async def one(i, job):
            deltas = []
            async for delta in vllm_engine.stream_one(job):
                deltas.append(delta)
                arrivals.append(i)
            return deltas

        async def every():
            return await asyncio.gather(*(one(i, j) for i, j in enumerate(jobs)))

        return loop.run_until_complete(every()), arrivals

    def whole(deltas):
        return "".join(d.text for d in deltas), deltas[-1]

    # 8 tokens: further on, the random model's near-ties can go either way between the two (fp32 on both)
    greedy = Sampling(8, seed=None)  # as a request's: no seed of its own
    jobs = [
        Job(prompt, Sampling(300, seed=None, ignore_eos=True), frames.array, frames.meta),
        Job(prompt, greedy, frames.array, frames.meta),
    ]
    (long, short), arrivals = run(jobs)
    assert len(long) > 1, "the long answer came in pieces, as the engine produced them"
    assert (long[-1].finish_reason, long[-1].completion_tokens) == ("length", 300)
    assert arrivals.index(1) < len(arrivals) - 1 and arrivals[-1] == 0  # the short job ended while the long one ran
    hf_steps = list(hf.stream([Job(prompt, greedy, frames.array, frames.meta)]))
    text, last = whole(short)
    assert text == "".join(s[0].text for s in hf_steps)
    hf_last = next(s[0] for s in hf_steps if s[0].finish_reason)
    assert (last.finish_reason, last.completion_tokens) == (hf_last.finish_reason, hf_last.completion_tokens)

    # a text-only job and an image job answer as transformers does; a stop string cuts; a seed repeats its draw
    image = Image.open(media / "picture.png").convert("RGB")
    text_prompt = hf.prompt([{"role": "user", "content": QUESTION}])
    image_prompt = hf.prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}])
    stop = text.split()[2]  # a word of the greedy answer: it certainly occurs
    sampled = [Sampling(12, temperature=1.0, seed=seed) for seed in (7, 7, 8)]
    jobs = [
        Job(text_prompt, greedy),
        Job(image_prompt, greedy, image=image),
        Job(prompt, Sampling(8, seed=None, stop=(stop,)), frames.array, frames.meta),
        *[Job(text_prompt, s) for s in sampled],
    ]
    outs, _ = run(jobs)
    got = [whole(d) for d in outs]
    for i in (0, 1):
        assert got[i][0] == "".join(s[0].text for s in hf.stream([jobs[i]])), i
    assert (got[2][0], got[2][1].finish_reason) == (text[: text.find(stop)], "stop")
    assert got[3][0] == got[4][0] != got[5][0]
    vllm_engine.engine.shutdown()
    # shutdown() cancels the engine's output handler through the loop: let the loop run that, or its zmq sockets stay
    # open and the process hangs at exit in zmq's Context.term (seen in CI: every test passed, pytest never ended)
    loop.run_until_complete(asyncio.sleep(0.5))
    loop.close()
