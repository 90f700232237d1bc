"""The watchdog: a run that waits on resources the cluster lost says so, a queue on a whole cluster stays quiet."""

import logging
import time

import pytest

from vstar.waiting import Snapshot, Watchdog, snapshot

pytestmark = pytest.mark.hostile

CPU1 = {"CPU 1": {"CPU": 1.0}}


def snap(total_cpu: float, free_cpu: float, demand: int = 1, launching: int = 0) -> Snapshot:
    demands = {"CPU 1": demand} if demand else {}
    nodes = [{"CPU": 1.0}] * int(total_cpu)
    return Snapshot(demands, CPU1 if demand else {}, {"CPU": free_cpu}, {"CPU": total_cpu}, nodes, launching)


def test_a_demand_the_lost_node_held_is_named_after_the_patience_then_every_repeat(caplog):
    dog = Watchdog("unused", patience_s=60, repeat_s=300)
    dog.check(snap(2, 0, demand=0), 0)  # the cluster as the run began: 2 nodes of 1 CPU
    with caplog.at_level(logging.WARNING, logger="vstar"):
        for t in (10, 50, 69):  # a node left at 10 s; its decode step waits
            dog.check(snap(1, 0.5), t)
        assert dog.said == []
        dog.check(snap(1, 0.5), 71)
        assert len(dog.said) == 1 and dog.said[0].startswith("waiting 61 s for CPU 1 (1 task or actor)")
        assert "free now: CPU 0.5 of 1 on 1 node" in dog.said[0] and "a node may have left" in dog.said[0]
        dog.check(snap(1, 0.5), 300)  # said again only after repeat_s
        assert len(dog.said) == 1
        dog.check(snap(1, 0.5), 372)
        assert len(dog.said) == 2 and "waiting 362 s" in dog.said[1]
        dog.check(snap(1, 0.5, demand=0), 380)  # served: the clock starts again for a new demand
        dog.check(snap(1, 0.5), 390)
        dog.check(snap(1, 0.5), 440)
        assert len(dog.said) == 2
    assert [r.getMessage() for r in caplog.records] == dog.said


def test_a_queue_on_a_whole_cluster_or_a_launching_node_is_quiet():
    dog = Watchdog("unused", patience_s=60)
    dog.check(snap(2, 0, demand=0), 0)
    for t in range(0, 1000, 10):  # busy CPUs, nothing lost: back-pressure, never a message
        dog.check(snap(2, 0, demand=7), t)
    shrunk = Watchdog("unused", patience_s=60)
    shrunk.check(snap(2, 0, demand=0), 0)
    for t in range(0, 1000, 10):  # a node left, and the autoscaler is launching one
        shrunk.check(snap(1, 0.5, launching=1), t)
    assert dog.said == shrunk.said == []


def test_the_watchdog_reads_a_real_clusters_unmet_demand(ray_local):
    """On the tests' 2-CPU Ray, a task asking for 64 CPUs: no node could ever hold it."""

    @ray_local.remote(num_cpus=64)
    def never():
        return 1

    ref = never.remote()
    gcs = ray_local.get_runtime_context().gcs_address
    try:
        with Watchdog(gcs, patience_s=1, every_s=0.5) as dog:
            deadline = time.monotonic() + 60
            while not dog.said and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        ray_local.cancel(ref, force=True)
    assert dog.said, f"nothing said; the cluster's demands: {snapshot(gcs).demands}"
    assert dog.said[0].startswith("waiting ") and "for CPU 64 (1 task or actor)" in dog.said[0]
    assert "no node of the cluster has that much" in dog.said[0]
