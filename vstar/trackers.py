"""Experiment trackers: `run.loggers: [tensorboard, wandb, mlflow]` (any subset; none by default).

    run:
      loggers: [tensorboard, wandb]    # vstar run jobs/kinetics700.yaml run.loggers=[mlflow]

What each gets, the same everywhere:
- the run's config (flattened dotted keys: tensorboard as text, wandb as the run config, mlflow as params);
- every training step of every cycle: train/loss, train/lr, train/grad_norm, train/tokens_per_s, at a global step
  that runs on across cycles (cycle k's steps follow cycle k-1's), plus train/cycle;
- every cycle (cycle 0 is the base): its metrics.jsonl line's numbers as cycle/<stage>/<key> — yields, records by
  origin, held-out accuracy overall, per task and per label type, stage seconds — at step = the cycle;
- at the end, the report's plots (tensorboard images, wandb images, mlflow artifacts).

Where, offline by default: tensorboard event files in `<run>/tensorboard/` (`tensorboard --logdir runs`);
wandb in `<run>/wandb/`, offline unless `WANDB_MODE` says otherwise (`wandb sync <run>/wandb/offline-run-*` later),
project `WANDB_PROJECT` or "vstar", one wandb run per vstar run (a resume continues it); mlflow at
`MLFLOW_TRACKING_URI`, else a file store in `<run>/mlruns/` (`mlflow ui --backend-store-uri <run>/mlruns`), one
mlflow run per vstar run (a resume continues it).

A resume does not log anything twice: `<run>/trackers.json` remembers which cycles and steps went out. The
tracker libraries are imported only when asked for; a missing one is a config error that says what to install.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path

from vstar.config import Config, ConfigError

log = logging.getLogger("vstar")
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow-skinny (or mlflow)"}
STEP_KEYS = {"loss": "loss", "lr": "lr", "grad_norm": "grad_norm"}


def _mlflow_name(key: str) -> str:
    """MLflow takes letters, digits, _ - . space and / in a metric name."""
    return re.sub(r"[^\w\-. /]", "_", key)


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts → {"a/b": number}: the numbers only (bools as 0/1), no strings or lists."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, bool):
            out[key] = int(v)
        elif isinstance(v, (int, float)) and v == v:
            out[key] = v
    return out


def dotted(d: dict, prefix: str = "") -> dict:
    """A config dict → {"train.lr": 1e-5, ...} (lists and None as text)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(dotted(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return out


class Trackers:
    """The run's trackers; every method is a no-op when `run.loggers` is empty."""

    def __init__(self, cfg: Config, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.names = list(dict.fromkeys(cfg.run.loggers))
        self.state_path = self.run_dir / "trackers.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.state.setdefault("cycles", [])
        self.state.setdefault("steps", {})  # cycle → steps logged
        self.tb = self.wandb = self.mlflow = None
        for name in self.names:
            try:
                getattr(self, f"_open_{name}")(cfg)
            except ImportError as e:
                raise ConfigError(
                    f"run.loggers: {name} needs the package {PACKAGES[name]} (pip install {PACKAGES[name].split()[0]}): {e}"
                ) from e
        if self.names:
            log.info("trackers: %s", ", ".join(self.names))
            self._save()

    # -- opening ---------------------------------------------------------------------------------------------

    def _open_tensorboard(self, cfg: Config) -> None:
        from tensorboardX import SummaryWriter

        # a file of its own per writer: event files are named by the second they are opened in, and a second writer
        # within that second (a quick resume) would truncate the first one's file
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:6]}"
        self.tb = SummaryWriter(logdir=str(self.run_dir / "tensorboard"), flush_secs=10, filename_suffix=suffix)
        if not self.state.get("config_logged"):
            self.tb.add_text(
                "config", "\n".join(f"    {k}: {v}" for k, v in dotted(cfg.model_dump(mode="json")).items())
            )

    def _open_wandb(self, cfg: Config) -> None:
        import wandb

        run_id = self.state.get("wandb_id") or uuid.uuid4().hex[:8]
        self.state["wandb_id"] = run_id
        self.wandb = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "vstar"),
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(self.run_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=dotted(cfg.model_dump(mode="json")),
        )
        self.wandb.define_metric("train/global_step")
        self.wandb.define_metric("train/*", step_metric="train/global_step")
        self.wandb.define_metric("cycle")
        self.wandb.define_metric("cycle/*", step_metric="cycle")

    def _open_mlflow(self, cfg: Config) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"file:{(self.run_dir / 'mlruns').resolve()}"
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless asked for: a local file store is what an offline run wants
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        import mlflow

        self.mlflow = mlflow.tracking.MlflowClient(uri)
        run_id = self.state.get("mlflow_id")
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "vstar")
            found = self.mlflow.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.mlflow.create_experiment(name)
            run_id = self.mlflow.create_run(experiment, run_name=self.run_dir.name).info.run_id
            self.state["mlflow_id"] = run_id
            params = dotted(cfg.model_dump(mode="json"))
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                batch = list(params.items())[i : i + 100]
                self.mlflow.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in batch])
        self.mlflow_run = run_id

    # -- logging ---------------------------------------------------------------------------------------------

    def log_steps(self, cycle: int, steps: list[dict]) -> None:
        """Cycle `cycle`'s training steps (steps.jsonl), the ones not logged yet, at a global step."""
        if not self.names:
            return
        done = self.state["steps"].get(str(cycle), 0)
        offset = sum(n for k, n in self.state["steps"].items() if int(k) < cycle)
        for i, step in enumerate(steps[done:], start=done):
            values = {f"train/{v}": step[k] for k, v in STEP_KEYS.items() if step.get(k) is not None}
            if step.get("tokens") and step.get("step_time_s"):
                values["train/tokens_per_s"] = step["tokens"] / step["step_time_s"]
            values["train/cycle"] = cycle
            self._scalars(values, offset + i + 1, "train/global_step")
        self.state["steps"][str(cycle)] = len(steps)
        self._save()

    def log_cycle(self, line: dict) -> None:
        """A metrics.jsonl line (one cycle), once."""
        k = line["cycle"]
        if not self.names or k in self.state["cycles"]:
            return
        values = {f"cycle/{key}": v for key, v in flatten(line).items() if key != "cycle"}
        values = {k_: v for k_, v in values.items() if not k_.startswith("cycle/verifier_failures/")}
        self._scalars(values, k, "cycle")
        self.state["cycles"].append(k)
        self._save()

    def log_plots(self, plots: Path) -> None:
        """The report's plots (PNG)."""
        if not self.names or not plots.is_dir():
            return
        images = sorted(plots.glob("*.png"))
        if self.tb is not None:
            import numpy as np
            from PIL import Image

            for path in images:
                self.tb.add_image(f"report/{path.stem}", np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({f"report/{p.stem}": wandb.Image(str(p)) for p in images})
        if self.mlflow is not None:
            for path in images:
                self.mlflow.log_artifact(self.mlflow_run, str(path), artifact_path="report")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.set_terminated(self.mlflow_run)
        self.tb = self.wandb = self.mlflow = None

    def _scalars(self, values: dict, step: int, step_key: str) -> None:
        if self.tb is not None:
            for key, v in values.items():
                self.tb.add_scalar(key, v, step)
        if self.wandb is not None:
            self.wandb.log({**values, step_key: step})
        if self.mlflow is not None:
            import mlflow

            now = int(time.time() * 1000)
            metrics = [mlflow.entities.Metric(_mlflow_name(k), float(v), now, step) for k, v in values.items()]
            for i in range(0, len(metrics), 1000):
                self.mlflow.log_batch(self.mlflow_run, metrics=metrics[i : i + 1000])

    def _save(self) -> None:
        tmp = self.state_path.with_name(".trackers.json.tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.state_path)
