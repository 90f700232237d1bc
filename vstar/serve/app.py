"""The Ray Serve app: an OpenAI-compatible chat endpoint that answers about a video (or an image, or text).

    vstar serve runs/demo                          # the run's best cycle, at http://127.0.0.1:8000/v1
    vstar serve runs/demo/cycle_1/model serve.port=8080 'serve.allowed_roots=[/data/videos]'
    serve deploy jobs/serve.yaml                   # on a cluster: see that file's header

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="runs/demo", max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "file:///data/videos/a.mp4"}},
        {"type": "text", "text": "What happens in the video?"}]}])

A request holds one video, one image (`{"type": "image_url", "image_url": {"url": ...}}`, the same kinds of URL)
or neither (a text chat); `n`, `seed` and `stop` work as in `vllm serve`.

Routes: `POST /v1/chat/completions` (`stream: true` → server-sent chunks ending with `data: [DONE]`),
`GET /v1/models`, `GET /health`. One deployment, `ChatServer`: its FastAPI routes validate the request
(`protocol`), fetch and decode the video with the project's frame sampler, or the image (`video`), then make one
`Job` a choice (`n`). With transformers (CPU) the jobs go to `_generate`, which `@serve.batch` runs together with
the replica's other pending jobs; with vLLM (GPU) each job goes straight to vLLM's async engine, which batches
every request in flight continuously and streams each one's text as it comes (`engine`). A refused request gets a 4xx OpenAI error body, a request
running past `serve.request_timeout_s` a 504; neither touches the other requests in its batch.

Under load: the body is counted while it is read (413 past the limit, chunked or not), first at Serve's proxy
(`proxy`), which passes no more than the limit to a replica; each request fetches and decodes its video on a thread
of its own (a pool as large as the requests a replica takes), apart from the one thread that runs the engine, so
slow downloads hold back no other request; requests past what the replicas take wait in the proxy up to
`serve.max_queued_requests`, then get a 429 with `Retry-After`. `/health` (and Serve's own health check, which
restarts the replica) says 503 when the engine has failed three batches running or has not stepped for
`serve.request_timeout_s` with work in hand.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations (`request: Request`) at runtime.
import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Request
from ray import serve as rserve
from ray.serve import Application
from ray.serve.config import BackpressureConfig
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, StreamingResponse

from vstar.config import Config, DataConfig, GenerateConfig, ServeConfig, accelerator_resources, load_config
from vstar.data.frames import mm_processor_kwargs
from vstar.serve.engine import ENGINES, Delta, Job
from vstar.serve.protocol import (
    APIError,
    ChatRequest,
    chunk,
    completion,
    new_id,
    parse_chat_request,
    sse,
    usage_chunk,
)
from vstar.serve.proxy import body_limit
from vstar.serve.video import load_image, load_video

log = logging.getLogger("vstar")
replica_log = logging.getLogger("ray.serve")  # what a replica logs to Serve's log files
APP_NAME = "vstar"

# Module-level helpers of the deployment are defined before it: Serve pickles the ingress class with the module
# globals that exist when the decorators run.


def _media(req: ChatRequest, limits: ServeConfig, data: DataConfig, timeout_s: float) -> dict:
    """The request's video (sampled frames and their metadata) or image as `Job` fields; none for a text chat."""
    if req.video_url is not None:
        frames = load_video(req.video_url, req.num_frames, limits, data, timeout_s)
        return {"video": frames.array, "meta": frames.meta}
    if req.image_url is not None:
        return {"image": load_image(req.image_url, limits, data, timeout_s)}
    return {}


async def _merged(streams: list):
    """The choices' streams of deltas as one, in the order the pieces come: (choice index, delta). Ends when every
    choice has finished; a failed choice raises here."""
    pieces: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream) -> None:
        try:
            async for delta in stream:
                await pieces.put((i, delta))
                if delta.finish_reason:
                    return
            raise RuntimeError("the engine ended without a finish reason")
        except Exception as e:
            await pieces.put((i, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            i, item = await pieces.get()
            if isinstance(item, Exception):
                raise item
            yield i, item
            running -= item.finish_reason is not None
    finally:
        for task in tasks:
            task.cancel()


async def _collect(pieces, n: int) -> list[tuple[str, Delta]]:
    """Each choice's whole text and last delta (with its finish reason and token counts)."""
    texts: list[list[str]] = [[] for _ in range(n)]
    last: list[Delta] = [Delta("")] * n
    async for i, delta in pieces:
        texts[i].append(delta.text)
        last[i] = delta
    return [("".join(t), d) for t, d in zip(texts, last, strict=True)]


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _cancel(jobs: list[Job]) -> None:
    for job in jobs:
        job.cancelled = True


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, counted as it arrives: a 413 as soon as it passes `limit`, whether it declared its length
    or came chunked (a declared length past the limit is refused before reading)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise APIError(413, f"the request has {length} bytes; the limit is {limit}")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise APIError(413, f"the request has more than {limit} bytes")
    return bytes(body)


FAILED_BATCHES = 3  # batches failing in a row before the replica calls itself unhealthy


api = FastAPI(title="vstar", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(HTTPException)
async def _route_error(request: Request, exc: HTTPException) -> JSONResponse:
    """An unknown route or method gets the same OpenAI error body as every other refusal."""
    return _error(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"))


@rserve.deployment
@rserve.ingress(api)
class ChatServer:
    def __init__(
        self,
        model: str,
        model_id: str,
        backend: str,
        engine_kwargs: dict,
        gen: GenerateConfig,
        data: DataConfig,
        limits: ServeConfig,
        max_batch_size: int,
        batch_wait_s: float,
        max_ongoing: int,
    ):
        self.engine = ENGINES[backend](model, **engine_kwargs)
        self.model_id, self.gen, self.data, self.limits = model_id, gen, data, limits
        self.created = int(time.time())
        self.max_n = max_batch_size  # a request's choices fit in one batch
        self._generate.set_max_batch_size(max_batch_size)
        self._generate.set_batch_wait_timeout_s(batch_wait_s)
        # one thread per request the replica takes (max_ongoing_requests): a fetch never waits for another's
        self.fetches = ThreadPoolExecutor(max_ongoing, thread_name_prefix="vstar-fetch")
        self.stepper = ThreadPoolExecutor(1, thread_name_prefix="vstar-engine")  # the engine's steps, in order
        self.failed_batches = 0
        self.stepping_since: float | None = None  # when the engine step in hand began

    def problem(self) -> str | None:
        """Why this replica cannot serve now, or None."""
        if self.engine.problem:
            return self.engine.problem
        if self.failed_batches >= FAILED_BATCHES:
            return f"the engine failed {self.failed_batches} batches in a row"
        if self.stepping_since is not None and time.monotonic() - self.stepping_since > self.limits.request_timeout_s:
            return f"the engine has not finished a step in {self.limits.request_timeout_s:g} s"
        return None

    def check_health(self) -> None:
        """Serve's periodic check: raising makes Serve replace the replica."""
        if problem := self.problem():
            raise RuntimeError(problem)

    @api.get("/health")
    async def health(self):
        if problem := self.problem():
            return JSONResponse({"status": "unhealthy", "model": self.model_id, "reason": problem}, status_code=503)
        return {"status": "ok", "model": self.model_id}

    @api.get("/v1/models")
    async def models(self) -> dict:
        card = {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "vstar"}
        return {"object": "list", "data": [card]}

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        deadline = time.monotonic() + self.limits.request_timeout_s
        jobs: list[Job] = []
        try:
            body = await asyncio.wait_for(_body(request, body_limit(self.limits.max_video_bytes)), _left(deadline))
            req = parse_chat_request(body, self.model_id, self.gen, self.data, self.limits.max_frames, self.max_n)
            left = _left(deadline)
            fetch = asyncio.get_running_loop().run_in_executor(self.fetches, _media, req, self.limits, self.data, left)
            media = await asyncio.wait_for(fetch, left)
            prompt = self.engine.prompt(req.messages)
            jobs = [Job(prompt, req.choice(j), **media) for j in range(req.n)]  # one job a choice, batched together
            pieces = _merged([self._pieces(job) for job in jobs])
            if req.stream:  # wait for the first piece here, so a request stuck in the queue still gets a 504
                first = await asyncio.wait_for(pieces.__anext__(), _left(deadline))
                events = self._events(req, jobs, first, pieces, deadline)
                return StreamingResponse(events, media_type="text/event-stream")
            choices = await asyncio.wait_for(_collect(pieces, req.n), _left(deadline))
            return completion(
                new_id(),
                req.model,
                [(text, last.finish_reason) for text, last in choices],
                choices[0][1].prompt_tokens,
                sum(last.completion_tokens for _, last in choices),
            )
        except APIError as e:
            replica_log.info("refused: %s", e)
            return _error(e)
        except TimeoutError:
            _cancel(jobs)
            return _error(self._timeout())
        except Exception as e:  # this request's batch failed: a 500 for it, the replica serves on
            _cancel(jobs)
            replica_log.exception("generation failed")
            return _error(APIError(500, f"generation failed: {type(e).__name__}: {e}"))

    async def _events(self, req: ChatRequest, jobs: list[Job], first: tuple[int, Delta], pieces, deadline: float):
        """Server-sent chunks: each choice's role, its text pieces (as they come, choices interleaved) and its finish
        reason, optionally the usage of all, [DONE]. A timeout or failure mid-stream becomes an `{"error": ...}`
        event (the status line has been sent)."""
        ident, model = new_id(), req.model
        try:
            for i in range(req.n):
                yield sse(chunk(ident, model, i, {"role": "assistant", "content": ""}))
            (i, delta), finished = first, []
            while True:
                if delta.text:
                    yield sse(chunk(ident, model, i, {"content": delta.text}))
                if delta.finish_reason:
                    yield sse(chunk(ident, model, i, {}, delta.finish_reason))
                    finished.append(delta)
                    if len(finished) == req.n:
                        break
                i, delta = await asyncio.wait_for(pieces.__anext__(), _left(deadline))
            if req.include_usage:
                completion_tokens = sum(d.completion_tokens for d in finished)
                yield sse(usage_chunk(ident, model, finished[0].prompt_tokens, completion_tokens))
        except TimeoutError:
            yield sse(self._timeout().body())
        except Exception as e:
            replica_log.exception("generation failed mid-stream")
            yield sse(APIError(500, f"generation failed: {type(e).__name__}: {e}").body())
        finally:  # also when the client went away: stop generating for it
            _cancel(jobs)
            await pieces.aclose()
        yield sse("[DONE]")

    def _pieces(self, job: Job):
        """The job's deltas: from the engine's own continuous batching (vLLM), or from `_generate`'s batches."""
        return self._streamed(job) if self.engine.continuous else self._generate(job)

    async def _streamed(self, job: Job):
        """`engine.stream_one`, its failures counted as a failed batch's are."""
        try:
            async for delta in self.engine.stream_one(job):
                yield delta
        except Exception:
            self.failed_batches += 1
            raise
        self.failed_batches = 0

    @rserve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # both set again from the config in __init__
    async def _generate(self, jobs: list[Job]):
        """The replica's pending jobs in one engine call; each step yields one item per job, and StopIteration
        for a job that has finished (Serve's protocol for batched generators)."""
        steps = self.engine.stream(jobs)
        finished = [False] * len(jobs)
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.stepping_since = time.monotonic()
                step = await loop.run_in_executor(self.stepper, next, steps, None)
                self.stepping_since = None
                if step is None:
                    break
                yield [StopIteration if done else d for done, d in zip(finished, step, strict=True)]
                finished = [done or d.finish_reason is not None for done, d in zip(finished, step, strict=True)]
        except Exception:
            self.stepping_since, self.failed_batches = None, self.failed_batches + 1
            raise
        self.failed_batches = 0

    def _timeout(self) -> APIError:
        return APIError(
            504, f"the request took longer than serve.request_timeout_s ({self.limits.request_timeout_s:g} s)"
        )


# -- building and running the app --------------------------------------------------------------------------------


def build_app(model: str, model_id: str, cfg: Config) -> Application:
    """The bound app: `model` is the folder or hub id to load, `model_id` the name clients ask for."""
    limits = cfg.serve
    max_batch_size, batch_wait_s, max_replicas = limits.max_batch_size, limits.batch_wait_s, limits.max_replicas
    # transformers: room for the next batch's requests to fetch and decode while one batch generates; vLLM's engine
    # batches continuously up to generate.max_num_seqs sequences, so a replica takes that many requests
    vllm = cfg.generate.backend == "vllm"
    max_ongoing = cfg.generate.max_num_seqs if vllm else 4 * max_batch_size
    if max_replicas:  # autoscale on requests in hand: a replica is busy with a full batch (vLLM: half its sequences)
        replicas = {
            "autoscaling_config": {
                "min_replicas": limits.num_replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": max_ongoing // 2 if vllm else max_batch_size,
            }
        }
    else:
        replicas = {"num_replicas": limits.num_replicas}
    engine_kwargs = {"dtype": cfg.model.dtype, "seed": cfg.run.seed}
    if vllm:
        engine_kwargs.update(cfg.generate.vllm_kwargs())
        engine_kwargs.update(mm_processor_kwargs=mm_processor_kwargs(cfg.data))  # vLLM bounds frames as decode did
    else:
        engine_kwargs.update(max_frame_pixels=cfg.data.max_frame_pixels)  # so does the transformers processor
    deployment = ChatServer.options(
        max_ongoing_requests=max_ongoing,
        # beyond what the replicas take, a bounded wait in the proxy, then 429 + Retry-After (not 504 for everyone)
        max_queued_requests=limits.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=429, retry_after_s=limits.retry_after_s),
        ray_actor_options={
            "num_cpus": 1,
            "num_gpus": cfg.generate.num_gpus_per_actor,
            "resources": accelerator_resources(cfg.generate.accelerator_resource, cfg.generate.num_gpus_per_actor),
        },
        **replicas,
    )
    return deployment.bind(
        model,
        model_id,
        cfg.generate.backend,
        engine_kwargs,
        cfg.generate,
        cfg.data,
        limits,
        max_batch_size,
        batch_wait_s,
        max_ongoing,
    )


def app_builder(args: dict) -> Application:
    """The import path of `serve deploy` (jobs/serve.yaml). `args`: `model` (a model folder, hub id or run
    directory, as for `vstar serve`), optional `config` (a vstar YAML) and `overrides` (["serve.max_frames=16"])."""
    unknown = set(args) - {"model", "config", "overrides"}
    if unknown or "model" not in args:
        raise ValueError(f"app args take model (required), config and overrides; got {sorted(args)}")
    cfg = load_config(args.get("config"), list(args.get("overrides", [])))
    return build_app(resolve_model(args["model"]), args["model"], cfg)


def resolve_model(model_or_run: str) -> str:
    """A model folder or hub id as it is; a run directory (it has metrics.jsonl) → the model of the cycle with
    the best held-out accuracy (the later cycle on a tie; cycle 0 is the base model)."""
    from vstar.report import read_metrics

    run = Path(model_or_run)
    if not (run / "metrics.jsonl").is_file():
        return model_or_run
    evaluated = [x for x in read_metrics(run) if isinstance((x.get("eval") or {}).get("accuracy"), (int, float))]
    if not evaluated:
        raise ValueError(f"{run}/metrics.jsonl has no evaluated cycle to serve")
    best = max(evaluated, key=lambda x: (x["eval"]["accuracy"], x["cycle"]))
    model = best["model"] if best["cycle"] == 0 else str(run / f"cycle_{best['cycle']}" / "model")
    if best["cycle"] != 0 and not Path(model).is_dir():
        raise ValueError(f"{model} does not exist: the best cycle's model is missing from the run")
    scores = ", ".join(f"{x['cycle']}: {x['eval']['accuracy']:.3f}" for x in evaluated)
    log.info("%s: serving cycle %d, the best held-out accuracy (%s) → %s", run, best["cycle"], scores, model)
    return model


def serve(model_or_run: str, cfg: Config, blocking: bool = True) -> str:
    """Deploy the app on Ray Serve at cfg.serve.host:port and return its base URL (http://host:port).

    `model_or_run`: a model folder, hub id or run directory (its best cycle); it is also the model name clients
    send, unless `serve.served_model_name` names it otherwise (`vstar serve --served-model-name`, as vLLM's). Ray must be running (`vstar serve` starts or joins it). `blocking`: serve until Ctrl-C, then
    delete the app; otherwise return at once (the caller ends it with `ray.serve.shutdown()`)."""
    model = resolve_model(model_or_run)
    name = cfg.serve.served_model_name or model_or_run
    rserve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    rserve.run(build_app(model, name, cfg), name=APP_NAME, route_prefix="/")
    url = f"http://{cfg.serve.host}:{cfg.serve.port}"
    log.info("serving %s as %r at %s/v1 (OpenAI chat completions with video; GET /health)", model_or_run, name, url)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            rserve.delete(APP_NAME)
    return url
