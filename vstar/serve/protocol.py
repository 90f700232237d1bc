"""The OpenAI chat-completions protocol as vstar speaks it: a request body → `ChatRequest`, results → JSON.

No Ray and no model here, so every rule tests in microseconds. A bad request raises `APIError`, which
carries the HTTP status and the OpenAI error body `{"error": {"message", "type", "param", "code"}}`.

    >>> body = b'''{"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": [
    ...     {"type": "video_url", "video_url": {"url": "/videos/a.mp4"}}, {"type": "text", "text": "What moves?"}]}]}'''
    >>> req = parse_chat_request(body, "m", GenerateConfig(), DataConfig(), max_frames=32, max_n=8)
    >>> req.video_url, req.image_url, req.num_frames, req.messages[0]["content"]
    ('/videos/a.mp4', None, 8, [{'type': 'video'}, {'type': 'text', 'text': 'What moves?'}])
    >>> req.sampling, req.n
    (Sampling(max_new_tokens=8, n=1, temperature=0.7, top_p=0.9, seed=None, ignore_eos=False, stop=()), 1)
    >>> parse_chat_request(b'{"model": "m"}', "m", GenerateConfig(), DataConfig(), 32, 8)
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 400 messages: missing required field 'messages'

A request holds at most one video or one image, in a user message, or none (a text chat): `video_url` and
`image_url` parts (data: URLs, paths under `serve.allowed_roots`, http(s)); audio parts are refused. Extensions to
the OpenAI request: `num_frames` (frames sampled from the video; default `data.num_frames`, at most
`serve.max_frames`; vLLM's `media_io_kwargs: {"video": {"num_frames": N}}` says the same) and, as in vLLM's server,
`ignore_eos` (generate exactly `max_tokens`: benchmarks).

`n` choices (at most `serve.max_batch_size`), each generated as its own job; with a `seed`, choice j draws from
seed + j, as vLLM's `n` does, so the same request gives the same choices. `stop`: a string or up to 4; a choice
ends before the first it generates (finish reason "stop").

    >>> body = b'''{"model": "m", "messages": [{"role": "user", "content": "Hi"}], "n": 3, "seed": 7,
    ...     "temperature": 1, "stop": "END"}'''
    >>> req = parse_chat_request(body, "m", GenerateConfig(), DataConfig(), 32, 8)
    >>> req.video_url, req.image_url, req.n, req.sampling.stop, [req.choice(j).seed for j in range(req.n)]
    (None, None, 3, ('END',), [7, 8, 9])

A request field this server does not honour is refused with a 400 that names it, never silently ignored: a client
written for `vllm serve` that sends `best_of` or `logprobs` learns so at once instead of getting answers that
quietly differ. Fields whose value changes nothing (`presence_penalty: 0`, `logprobs: false`, `user`, `metadata`,
...) pass.

    >>> parse_chat_request(b'{"model": "m", "messages": [], "logprobs": true, "best_of": 2}', "m", GenerateConfig(),
    ...                    DataConfig(), 32, 8)
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 400 best_of: not supported by vstar serve (it would be ignored): best_of, logprobs
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from vstar.config import DataConfig, GenerateConfig
from vstar.generate.sampling import Sampling

ROLES = ("system", "user", "assistant")
MEDIA = {"video_url": "video", "image_url": "image"}  # a media part's type → its part in the chat template
HONOURED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
            "stream_options", "n", "seed", "stop", "ignore_eos", "num_frames", "media_io_kwargs"}  # fmt: skip
# fields that carry no instruction for generation (metadata, the client's bookkeeping): accepted as they are
METADATA = {"user", "metadata", "store", "service_tier", "request_id", "priority"}
# fields accepted only at the value that changes nothing
NEUTRAL = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
    "top_k": (None, 0, -1),
    "min_p": (None, 0, 0.0),
    "skip_special_tokens": (None, True),
}
MAX_STOP = 4  # stop strings a request may give (OpenAI's limit)
INT64 = (-(2**63), 2**63 - 1)  # a seed's range, as OpenAI's and vLLM's
ERROR_TYPES = {403: "permission_error", 404: "not_found_error", 500: "server_error", 504: "timeout_error"}


class APIError(Exception):
    """A request the server refuses, or could not finish: an HTTP status and an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(f"{status} {param or '-'}: {message}")
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict]  # for the chat template: a video part is {"type": "video"}, an image part {"type": "image"}
    video_url: str | None  # at most one of video_url and image_url; neither: a text chat
    image_url: str | None
    sampling: Sampling  # one choice's: max_tokens, temperature, top_p, ignore_eos, stop; seed: the request's or None
    n: int  # choices
    num_frames: int
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts

    def choice(self, j: int) -> Sampling:
        """Choice j's sampling: it draws from seed + j (vLLM's rule for `n`), or unseeded."""
        return self.sampling if self.sampling.seed is None else replace(self.sampling, seed=self.sampling.seed + j)


def parse_chat_request(
    body: bytes, model_id: str, gen: GenerateConfig, data: DataConfig, max_frames: int, max_n: int
) -> ChatRequest:
    """Validate a POST /v1/chat/completions body. Defaults come from `gen` and `data`; raises APIError."""
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # json's C scanner recurses per level: 100k nested arrays are no chat request
        raise APIError(400, "the request body is not valid JSON: nested too deeply") from None
    if not isinstance(req, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(req).__name__}")
    for field in ("model", "messages"):
        if field not in req:
            raise APIError(400, f"missing required field '{field}'", field)
    if req["model"] != model_id:
        raise APIError(404, f"model {req['model']!r} is not served here; GET /v1/models lists {model_id!r}", "model")
    ignored = sorted(
        k for k, v in req.items() if k not in HONOURED | METADATA and not (k in NEUTRAL and v in NEUTRAL[k])
    )
    if ignored:
        raise APIError(400, f"not supported by vstar serve (it would be ignored): {', '.join(ignored)}", ignored[0])
    messages, media = _messages(req["messages"])
    if len(media) > 1:
        where = ", ".join(f"{kind} at {at}" for kind, _, at in media)
        raise APIError(
            400, f"{len(media)} media parts ({where}); this server takes one image or one video", media[1][2]
        )
    urls = {kind: url for kind, url, _ in media}
    stream = _get(req, "stream", bool, False)
    options = _get(req, "stream_options", dict, {}) or {}
    return ChatRequest(
        model=model_id,
        messages=messages,
        video_url=urls.get("video_url"),
        image_url=urls.get("image_url"),
        sampling=Sampling(
            max_new_tokens=_number(req, "max_completion_tokens", _number(req, "max_tokens", gen.max_new_tokens, 1), 1),
            temperature=float(_number(req, "temperature", gen.temperature, 0, 2)),
            top_p=float(_number(req, "top_p", gen.top_p, 0, 1, open_low=True)),
            seed=_number(req, "seed", None, *INT64, integer=True),
            ignore_eos=_get(req, "ignore_eos", bool, False),
            stop=_stop(req.get("stop")),
        ),
        n=_number(req, "n", 1, 1, max_n),
        num_frames=_number(
            {"num_frames": req.get("num_frames", _media_frames(req))}, "num_frames", data.num_frames, 1, max_frames
        ),
        stream=stream,
        include_usage=bool(stream and options.get("include_usage")),
    )


def _messages(raw: Any) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """OpenAI messages → chat-template messages, and their media parts in order: (kind, url, where), kind being
    "video_url" or "image_url"."""
    if not isinstance(raw, list) or not raw:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    out, media = [], []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise APIError(400, f"{where}: needs a role, one of {', '.join(ROLES)}", where)
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise APIError(400, f"{where}.content: must be a string or a list of parts", f"{where}.content")
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            at = f"{where}.content[{j}]"
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind in MEDIA and m["role"] == "user":
                media.append((kind, _url(part.get(kind), kind, at), at))
                parts.append({"type": MEDIA[kind]})
            else:
                raise APIError(
                    400, f"{at}: expected a text part, or a video_url or image_url part in a user message", at
                )
        out.append({"role": m["role"], "content": parts})
    return out, media


def _url(ref: Any, kind: str, at: str) -> str:
    """A media part's URL: `{"url": ...}` or the bare string; an image's `detail` other than "auto" is refused (the
    image's size is the server's pixel budget, whatever the client asks)."""
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise APIError(400, f"{at}: {kind} needs a url", at)
    if isinstance(ref, dict) and ref.get("detail", "auto") != "auto":
        raise APIError(400, f"{at}: detail {ref['detail']!r} is not supported (images are sized by the server)", at)
    return url


def _stop(stop: Any) -> tuple[str, ...]:
    """`stop`: a string or a list of up to 4 non-empty strings (null or "" for none).

    >>> _stop("END"), _stop(["a", "b", "a"]), _stop(None), _stop("")
    (('END',), ('a', 'b'), (), ())
    >>> _stop(["a", ""])
    Traceback (most recent call last):
    vstar.serve.protocol.APIError: 400 stop: 'stop' must be a string or a list of up to 4 non-empty strings
    """
    stops = [] if stop in (None, "") else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(x, str) and x for x in stops):
        raise APIError(400, f"'stop' must be a string or a list of up to {MAX_STOP} non-empty strings", "stop")
    return tuple(dict.fromkeys(stops))


def _media_frames(req: dict):
    """vLLM's `media_io_kwargs: {"video": {"num_frames": N}}`: N (None when not given); other keys are refused."""
    media = _get(req, "media_io_kwargs", dict, {})
    if set(media) - {"video"} or set(_get(media, "video", dict, {})) - {"num_frames"}:
        raise APIError(400, "media_io_kwargs: only {'video': {'num_frames': N}} is supported", "media_io_kwargs")
    return (media.get("video") or {}).get("num_frames")


def _get(req: dict, key: str, kind: type, default):
    value = req.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise APIError(400, f"'{key}' must be a {kind.__name__}", key)
    return value


def _number(req: dict, key: str, default, low=None, high=None, open_low=False, integer=False):
    """An int (when `default` is one, or `integer`) or a float in [low, high] ((low, high] with `open_low`)."""
    value = req.get(key)
    if value is None:
        return default
    kind = int if integer or isinstance(default, int) else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise APIError(400, f"'{key}' must be {'an integer' if kind is int else 'a number'}", key)
    if (low is not None and (value <= low if open_low else value < low)) or (high is not None and value > high):
        bounds = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'}]"
        raise APIError(400, f"'{key}' must be in {bounds}, got {value}", key)
    return value


# -- responses ------------------------------------------------------------------------------------------------


def new_id() -> tuple[str, int]:
    """A completion id and its creation time."""
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    ident: tuple[str, int], model: str, choices: list[tuple[str, str]], prompt_tokens: int, completion_tokens: int
) -> dict:
    """The non-streaming response: `choices` are (text, finish_reason), in order; the usage counts every choice's
    completion tokens and the prompt once."""
    return {
        "id": ident[0],
        "object": "chat.completion",
        "created": ident[1],
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
            for i, (text, finish_reason) in enumerate(choices)
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk(ident: tuple[str, int], model: str, index: int, delta: dict, finish_reason: str | None = None) -> dict:
    """One streamed piece of choice `index`: `delta` is {"role": ...} first, then {"content": ...}, then {} with the
    finish reason."""
    return {
        "id": ident[0],
        "object": "chat.completion.chunk",
        "created": ident[1],
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk(ident: tuple[str, int], model: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """The last chunk when the client asked for `stream_options.include_usage`: no choices, the token counts."""
    return {
        "id": ident[0],
        "object": "chat.completion.chunk",
        "created": ident[1],
        "model": model,
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def sse(obj: dict | str) -> str:
    """A server-sent event: `data: <json>` and a blank line; the stream ends with `sse("[DONE]")`.

    >>> sse("[DONE]")
    'data: [DONE]\\n\\n'
    """
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"
