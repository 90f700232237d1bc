"""Say what a stalled run waits for, instead of hanging in silence when the cluster shrank.

    with Watchdog(ray.get_runtime_context().gcs_address):   # the driver, around its cycles
        ...

A background thread reads the cluster's status from the GCS every `every_s` (`ray.autoscaler.v2.sdk`: what tasks,
actors and placement groups ask for and cannot get, the nodes and their resources; no dashboard needed). A demand
unmet for `patience_s` is logged, again every `repeat_s` while it lasts, when it cannot end by itself:

- no node of the cluster could ever hold it (an 8-GPU worker on 4-GPU nodes), or
- the cluster has lost resources since the watch began (a node left): what the run needs may be on the node that
  went, e.g. a decode step asking for 1 CPU beside a 0.5-CPU training worker on the last node with 1 CPU;

and no node is being launched for it (an autoscaled cluster serves the demand itself).

A demand that is only queued behind busy CPUs on a whole cluster is normal back-pressure and is never logged.

    >>> snap = Snapshot({"CPU 1": 1}, {"CPU 1": {"CPU": 1.0}}, {"CPU": 0.5}, {"CPU": 1.0}, [{"CPU": 1.0}])
    >>> print(waiting_message("CPU 1", 95.0, snap, start_total={"CPU": 2.0}))
    waiting 95 s for CPU 1 (1 task or actor); free now: CPU 0.5 of 1 on 1 node; the cluster had CPU 2 when the run \
began: a node may have left. The run goes on when the resources return (or lower what a step asks for: \
train.cpus_per_worker, generate.num_actors, ...).
    >>> waiting_message("CPU 1", 95.0, snap, start_total={"CPU": 1.0}) is None  # queued on a whole cluster: fine
    True
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("vstar")

SHOWN = ("CPU", "GPU", "TPU", "HPU", "neuron_cores")  # resources worth naming; memory and node:* labels are not


@dataclass(frozen=True)
class Snapshot:
    """What the cluster asks for and has, at one moment."""

    demands: dict[str, int]  # a bundle's text → how many tasks, actors or placement groups ask for it
    bundles: dict[str, dict[str, float]]  # a bundle's text → the bundle
    free: dict[str, float]
    total: dict[str, float]
    nodes: list[dict[str, float]]  # each alive node's total resources
    launching: int = 0  # nodes the autoscaler is launching or starting: the demand is being served


def snapshot(gcs_address: str) -> Snapshot:
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(gcs_address)
    demands: dict[str, int] = {}
    bundles: dict[str, dict[str, float]] = {}
    summary = status.resource_demands
    by_count = [(d.bundles_by_count, "") for d in summary.ray_task_actor_demand]
    by_count += [(d.bundles_by_count, " (placement group)") for d in summary.placement_group_demand]
    for requests, what in by_count:
        for request in requests:
            text = describe(request.bundle) + what
            demands[text] = demands.get(text, 0) + request.count
            bundles[text] = dict(request.bundle)
    nodes = [
        {u.resource_name: u.total for u in node.resource_usage.usage}
        for node in [*status.active_nodes, *status.idle_nodes]
        if node.resource_usage is not None
    ]
    launching = len(status.pending_launches) + len(status.pending_nodes)
    return Snapshot(demands, bundles, status.available_resources(), status.total_resources(), nodes, launching)


def describe(resources: dict[str, float]) -> str:
    """The resources worth naming, as `CPU 1, GPU 1` (a bundle of memory alone: `memory`)."""
    shown = [f"{k} {v:g}" for k, v in sorted(resources.items()) if k in SHOWN and v]
    return ", ".join(shown) or ", ".join(sorted(resources)) or "nothing"


def fits(bundle: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(k, 0.0) >= v for k, v in bundle.items() if v)


def waiting_message(text: str, waited_s: float, snap: Snapshot, start_total: dict[str, float]) -> str | None:
    """What to log for a demand unmet for `waited_s`, or None when it can end by itself (see the module)."""
    bundle = snap.bundles[text]
    never = not any(fits(bundle, node) for node in snap.nodes)
    shrank = any(snap.total.get(k, 0.0) < v for k, v in start_total.items() if k in SHOWN)
    if snap.launching or not (never or shrank):
        return None
    n = snap.demands[text]
    nodes = len(snap.nodes)
    free = ", ".join(f"{k} {snap.free.get(k, 0.0):g} of {snap.total.get(k, 0.0):g}" for k in _names(bundle, snap))
    line = (
        f"waiting {waited_s:.0f} s for {text} ({n} {'task or actor' if n == 1 else 'tasks or actors'}); "
        f"free now: {free} on {nodes} node{'s' * (nodes != 1)}; "
    )
    if never:
        return line + "no node of the cluster has that much: add a larger node or lower the ask."
    return line + (
        f"the cluster had {describe(start_total)} when the run began: a node may have left. The run goes on when "
        "the resources return (or lower what a step asks for: train.cpus_per_worker, generate.num_actors, ...)."
    )


def _names(bundle: dict[str, float], snap: Snapshot) -> list[str]:
    return [k for k in sorted(bundle) if k in SHOWN] or [k for k in SHOWN if k in snap.total][:1]


class Watchdog:
    """The background thread of the module: a context manager (or `start`/`stop`)."""

    def __init__(self, gcs_address: str, patience_s: float = 60.0, every_s: float = 10.0, repeat_s: float = 300.0):
        self.gcs_address, self.patience_s, self.every_s, self.repeat_s = gcs_address, patience_s, every_s, repeat_s
        self.first_seen: dict[str, float] = {}
        self.last_said: dict[str, float] = {}
        self.said: list[str] = []  # every message logged (for tests and the run's end)
        self.start_total: dict[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vstar-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(0 if self.start_total is None else self.every_s):
            try:
                self.check(snapshot(self.gcs_address), time.monotonic())
            except Exception as e:  # the watch must never take the run down; a GCS hiccup is retried next tick
                log.debug("watchdog: cluster status unavailable (%s)", e)

    def check(self, snap: Snapshot, now: float) -> None:
        if self.start_total is None:
            self.start_total = {k: v for k, v in snap.total.items() if k in SHOWN}
        for text in list(self.first_seen):
            if text not in snap.demands:
                del self.first_seen[text]
                self.last_said.pop(text, None)
        for text in snap.demands:
            waited = now - self.first_seen.setdefault(text, now)
            if waited < self.patience_s or now - self.last_said.get(text, -self.repeat_s) < self.repeat_s:
                continue
            if (message := waiting_message(text, waited, snap, self.start_total)) is not None:
                self.last_said[text] = now
                self.said.append(message)
                log.warning(message)
