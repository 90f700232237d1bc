"""Serving a cycle's model: an OpenAI-compatible chat endpoint on Ray Serve that takes video.

    vstar serve runs/demo            # the run's best cycle at http://127.0.0.1:8000/v1

`protocol` (request → ChatRequest, responses) and `video` (video_url → frames, with the limits) are plain
functions; `engine` runs the model on a batch (no Ray either); `app` is the Ray Serve deployment, `serve()`,
`build_app()` and `app_builder()` (the import path of jobs/serve.yaml). Nothing is imported here, so the
engines load where Ray Serve's own dependencies are missing (the vLLM test environment).
"""
