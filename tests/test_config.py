from pathlib import Path

import pytest

from vstar.config import Config, ConfigError, load_config

# run configs; serve.yaml is a Ray Serve config (tests/test_serve.py checks it against Serve's schema)
JOBS = sorted(p for p in (Path(__file__).parents[1] / "jobs").glob("*.yaml") if p.name != "serve.yaml")


def test_defaults_follow_the_paper():
    cfg = load_config()
    assert cfg == Config()
    assert (cfg.data.num_frames, cfg.train.lr, cfg.train.epochs, cfg.train.init_from) == (8, 2e-5, 1, "base")


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config(
        None,
        [
            "train.lr=1e-5",
            "data.num_frames=16",
            "train.lora.enabled=true",
            "serve.allowed_roots=[/data, /videos]",
            "model.path=null",
        ],
    )
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.data.num_frames == 16
    assert cfg.train.lora.enabled is True
    assert cfg.serve.allowed_roots == ["/data", "/videos"]
    assert cfg.model.path is None


def test_the_cache_is_absolute_wherever_it_is_given(tmp_path, monkeypatch):
    """Ray workers run in another working directory: a relative cache must not reach them relative."""
    monkeypatch.chdir(tmp_path)
    assert load_config(None, ["run.cache_dir=runs/cache"]).run.cache == tmp_path / "runs" / "cache"
    monkeypatch.setenv("VSTAR_CACHE", "vc")
    assert load_config(None, []).run.cache == tmp_path / "vc"
    monkeypatch.delenv("VSTAR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(None, ["run.cache_dir=~/c"]).run.cache == tmp_path / "home" / "c"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 2\ndata:\n  num_frames: 4\n")
    cfg = load_config(path, ["train.epochs=3"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.data.num_frames) == (0.001, 3, 4)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lrr=1"], "train.lrr: unknown key (train takes: lr, epochs,"),
        (["trian.lr=1"], "trian: unknown key (the config takes: run, data, model,"),
        (["demo.synth.sized=1"], "demo.synth.sized: unknown key (demo.synth takes: num_videos,"),
        (["train.lr=fast"], "train.lr: Input should be a valid number"),
        (["data.num_frames=0"], "data.num_frames: Input should be greater than or equal to 1 (got 0)"),
        (["generate.backend=tgi"], "generate.backend: Input should be 'hf' or 'vllm' (got 'tgi')"),
        (["train.min_workers=4"], "train: min_workers (4) must not exceed num_workers (1)"),
        (
            ["generate.tensor_parallel_size=2", "generate.num_gpus_per_actor=1"],
            "generate: tensor_parallel_size 2 needs num_gpus_per_actor 2: an actor holds the GPUs its engine shards "
            "over (num_gpus_per_actor is 1)",
        ),
        (["generate.gpu_memory_utilization=1.5"], "generate.gpu_memory_utilization: Input should be less than or"),
        (["data.max_frame_pixels=-1"], "data.max_frame_pixels: Input should be greater than or equal to 3136"),
        (["data.max_video_pixels=0"], "data.max_video_pixels: Input should be greater than or equal to 3136"),
        (["data.max_video_pixels=20000"], "data: max_video_pixels (20000) must hold num_frames (8) frames of at least"),
        (["data.frame_quality=101"], "data.frame_quality: Input should be less than or equal to 100 (got 101)"),
        (["data.frame_codec=webp"], "data.frame_codec: Input should be 'jpeg' or 'png' (got 'webp')"),
        (["train"], "override 'train' must look like section.key=value"),
    ],
)
def test_errors_are_one_line_and_name_the_key(overrides, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_vllm_engine_settings_default_for_a_7b_video_model():
    gen = load_config(None, ["generate.backend=vllm"]).generate
    assert (gen.max_model_len, gen.gpu_memory_utilization, gen.max_num_seqs) == (32768, 0.90, 256)
    assert gen.vllm_kwargs() == dict(
        tensor_parallel_size=1, lora_path=None, max_model_len=32768, gpu_memory_utilization=0.90, max_num_seqs=256
    )
    tp = load_config(None, ["generate.tensor_parallel_size=4", "generate.num_gpus_per_actor=4"]).generate
    assert tp.vllm_kwargs()["tensor_parallel_size"] == 4


def test_file_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("data:\n  num_frame: 8\n")
    with pytest.raises(ConfigError, match=r"bad_key\.yaml: data\.num_frame: unknown key"):
        load_config(bad_key)
    not_yaml = tmp_path / "not_yaml.yaml"
    not_yaml.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not_yaml\.yaml is not valid YAML"):
        load_config(not_yaml)
    a_list = tmp_path / "a_list.yaml"
    a_list.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(a_list)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", "run.name=x"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_jobs_folder_has_configs():
    assert JOBS, "jobs/ holds at least one YAML"


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_job_yaml_loads(path):
    """Run configs load as a Config; runtime_env files are what `ray job submit --runtime-env` accepts."""
    if path.name.startswith("runtime_env"):
        import yaml
        from ray.runtime_env import RuntimeEnv

        RuntimeEnv(**yaml.safe_load(path.read_text()))
    else:
        load_config(path)


def test_cluster_yaml_passes_the_ray_autoscaler_schema():
    """What `ray up cluster.yaml` checks first (Ray's own validator; a private API, pinned with ray 2.60)."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]


def test_the_demo_job_is_the_embedded_default():
    from vstar.config import EMBEDDED_DEFAULT

    assert load_config(Path(__file__).parents[1] / "jobs" / "demo.yaml") == load_config(EMBEDDED_DEFAULT)


def test_accelerator_resources_need_gpus():
    cfg = load_config(None, ["generate.num_gpus_per_actor=1", "generate.accelerator_resource=generate"])
    assert cfg.generate.accelerator_resource == "generate"
    with pytest.raises(ConfigError, match=r"generate: accelerator_resource .* num_gpus_per_actor"):
        load_config(None, ["generate.accelerator_resource=generate"])
    with pytest.raises(ConfigError, match=r"train: accelerator_resource .* use_gpu"):
        load_config(None, ["train.accelerator_resource=train"])


def test_accelerator_resources_is_one_unit_per_gpu_or_nothing():
    from vstar.config import accelerator_resources

    assert accelerator_resources("generate", 0.5) == {"generate": 0.5}
    assert accelerator_resources(None, 1) == {}
