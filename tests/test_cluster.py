"""cluster.yaml against what it installs and what the cluster jobs ask for: the Python its nodes get runs the GPU
extra, every node gets the same environment, and Ray starts from it."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).parents[1]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# vLLM 0.33.0's metadata on PyPI (https://pypi.org/pypi/vllm/json, info for 0.33.0, the only 0.33.x release):
# requires_python "<3.15,>=3.11"; requires_dist "torch==2.13.0". torch 2.13.0's Linux wheels (their .whl.metadata
# on files.pythonhosted.org) require cuda-toolkit==13.0.3 and nvidia-nccl-cu13: CUDA 13.0, which needs an NVIDIA
# driver >= 580.
VLLM_VERSION = "0.33.0"
VLLM_REQUIRES_PYTHON = SpecifierSet("<3.15,>=3.11")
VLLM_TORCH = "2.13.0"
MIN_DRIVER = 580

VENV = "~/venv"


def _setup() -> list[str]:
    return [str(c) for c in CLUSTER["setup_commands"]]


def _venv_python() -> str:
    """The Python version the shared setup makes ~/venv with (`uv venv --python X.Y ~/venv`)."""
    made = [re.search(r"uv venv --python (\d+\.\d+)\S* ~/venv\b", c) for c in _setup()]
    versions = [m.group(1) for m in made if m]
    assert len(versions) == 1, "setup_commands make ~/venv once, with `uv venv --python X.Y ~/venv`"
    return versions[0]


def test_the_gpu_extra_is_the_vllm_release_recorded_here():
    (vllm,) = (Requirement(r) for r in PROJECT["optional-dependencies"]["gpu"] if r.startswith("vllm"))
    assert VLLM_VERSION in vllm.specifier and "0.34.0" not in vllm.specifier
    cpu_torch = (ROOT / "constraints" / "cpu.txt").read_text()
    assert f"torch=={VLLM_TORCH}" in cpu_torch  # CPU machines test the torch the GPU nodes get


def test_the_cluster_python_runs_the_gpu_extra():
    python = _venv_python()
    assert python in VLLM_REQUIRES_PYTHON
    assert python in SpecifierSet(PROJECT["requires-python"])


def test_requires_python_admits_no_version_vllm_refuses_below_its_floor():
    ours = SpecifierSet(PROJECT["requires-python"])
    for minor in range(8, 15):
        if f"3.{minor}" in ours:
            assert f"3.{minor}" in VLLM_REQUIRES_PYTHON, f"requires-python admits 3.{minor}; vLLM 0.33 does not"


def test_every_node_installs_the_same_venv():
    """One shared setup for all node types: no node type, and not the head, makes its own environment."""
    for name, node in CLUSTER["available_node_types"].items():
        assert "worker_setup_commands" not in node and "setup_commands" not in node, name
    for section in ("head_setup_commands", "worker_setup_commands"):
        for command in CLUSTER.get(section) or []:
            assert "venv" not in command or f"{VENV}/bin/" in command, (section, command)
    installs = [c for c in _setup() if "pip install" in c]
    assert installs and all(f"--python {VENV}/bin/python" in c for c in installs), installs
    assert any("[gpu]" in c for c in installs)


def test_ray_starts_from_the_venv():
    commands = [*CLUSTER["head_start_ray_commands"], *CLUSTER["worker_start_ray_commands"]]
    calls = [m.group(0) for c in commands for m in re.finditer(r"\S*\bray (?:start|stop)\b", c)]
    assert len(calls) == 4 and all(call.startswith(f"{VENV}/bin/ray ") for call in calls), calls


def test_gpu_nodes_check_the_driver_for_cuda_13():
    checks = [c for c in _setup() if "nvidia-smi" in c]
    assert len(checks) == 1 and f"-ge {MIN_DRIVER}" in checks[0], checks


# Resources Ray knows by itself: anything else a node type offers is a custom resource that pins work to it.
BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


def _custom_resources() -> dict[str, tuple[str, dict]]:
    """custom resource → (node type, that node type's resources)."""
    found = {}
    for name, node in CLUSTER["available_node_types"].items():
        for resource in set(node.get("resources") or {}) - BUILTIN:
            assert resource not in found, f"{resource} is offered by {found[resource][0]} and {name}"
            found[resource] = (name, node["resources"])
    return found


def _cluster_jobs():
    """The jobs that run on cluster.yaml's cluster: their run directory is on its shared file system."""
    from vstar.config import load_config

    cfgs = {p.name: load_config(p) for p in JOBS if p.name not in ("serve.yaml", "runtime_env.yaml")}
    return {name: cfg for name, cfg in cfgs.items() if cfg.run.root.startswith("/mnt/shared/")}


def test_gpu_node_types_are_pinned_by_a_custom_resource_per_gpu():
    custom = _custom_resources()
    gpu_types = {n for n, node in CLUSTER["available_node_types"].items() if (node.get("resources") or {}).get("GPU")}
    assert gpu_types == {node for node, _ in custom.values()} == {"gpu_generate", "gpu_train"}
    for resource, (_, offered) in custom.items():
        assert offered[resource] == offered["GPU"], resource  # one unit per GPU, as each actor/worker asks


def test_the_cluster_jobs_ask_for_the_resources_cluster_yaml_defines():
    jobs = _cluster_jobs()
    assert {"kinetics700.yaml", "finediving.yaml", "star.yaml"} <= set(jobs)
    custom = _custom_resources()
    for name, cfg in jobs.items():
        asked = {cfg.generate.accelerator_resource, cfg.train.accelerator_resource}
        assert asked == set(custom), (name, asked)
        generate_node = custom[cfg.generate.accelerator_resource]
        assert generate_node[0] == "gpu_generate" and custom[cfg.train.accelerator_resource][0] == "gpu_train", name
        # the generation actors fit on the node type's GPUs at its largest
        node = CLUSTER["available_node_types"][generate_node[0]]
        assert (
            cfg.generate.num_actors * cfg.generate.num_gpus_per_actor <= node["max_workers"] * node["resources"]["GPU"]
        )
