"""Serving a cycle's model: an OpenAI-compatible chat endpoint on Ray Serve that takes video.

    vstar serve runs/demo            # the run's best cycle at http://127.0.0.1:8000/v1

`protocol` (request → ChatRequest, responses) and `video` (video_url → frames, with the limits) are plain
functions; `engine` runs the model on a batch; `app` is the Ray Serve deployment and `serve()`.
"""

from vstar.serve.app import app_builder, build_app, resolve_model, serve

__all__ = ["app_builder", "build_app", "resolve_model", "serve"]
