"""The `vstar` command. `vstar --help` and `vstar COMMAND --help` explain each command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DESCRIPTION = """\
vstar: Video-STaR on Ray. Turns any labeled video dataset into video instruction-tuning data by
cycling a video language model through answer generation, label filtering, label rationalization
and re-training.

Start here:
  vstar run                            the embedded default: local Ray, synthetic videos, tiny offline VLM
  vstar run jobs/demo.yaml train.lr=1e-5 data.num_frames=16
                                       a config file plus dotted overrides; rerun the same to resume
  vstar run jobs/miniature.yaml        the miniature experiment's world and base, the full loop (README)
  vstar pretrain jobs/miniature.yaml   train (and cache) the tiny VLM's base model alone
  vstar report runs/demo               report.md with plots from the run's metrics.jsonl
  vstar serve runs/demo                chat with the run's best model: OpenAI-compatible, with video
  vstar export runs/demo --format llava   the curated data as LLaVA/ShareGPT JSON
  vstar config                         every config key with its default
  vstar plan jobs/kinetics700.yaml     video tokens and GPU memory per worker before a run; refuses what cannot fit
  vstar data synth --out data/synth    write synthetic labeled videos and their manifest
  vstar data validate MANIFEST         check a manifest; bad rows are reported with line and field
  vstar data convert star --annotations STAR_train.json --videos charades/ --out data/star
                                       Kinetics-700, FineDiving, STAR or your own CSV/JSONL → a manifest
  vstar verify ANSWERS.jsonl           verify answers against their labels; verdicts with reasons
  vstar generate --mode answer         answer generation alone (--mode rationale: the hinted re-ask)
  vstar train --data SFT.jsonl --out MODEL   finetune with Ray Train (FSDP2 workers, optional LoRA)
"""

OVERRIDES_HELP = "dotted overrides such as train.lr=1e-5 data.num_frames=16 (values are parsed as YAML)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from vstar.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"vstar: {e}", file=sys.stderr)
        return 2


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Arguments as `parse_args` reads them, but dotted overrides may also come after the options
    (`vstar serve MODEL --port 8000 serve.num_replicas=2`): argparse stops a `nargs="*"` positional at the first
    option, and its intermixed parsing does not support subcommands. They keep their order on the line."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vstar", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="run the Video-STaR cycles to a report; the same command resumes",
        description=_doc("vstar.driver"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config (only the keys that differ from the defaults); omit for the embedded default",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--fork",
        action="store_true",
        help="the run directory exists: start a new one, <run.name>-fork<N>, with this config instead of resuming",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ray's, Ray Data's, Ray Train's and the workers' log lines here too (always in <run>/logs/vstar.log "
        "and Ray's session logs)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "pretrain",
        help="train the demo's tiny VLM base (demo.pretrain.*) and print its folder; cached, `vstar run` reuses it",
        description=_doc("vstar.demo.pretrain"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config; omit for the embedded default")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--ship",
        action="store_true",
        help="write the trained base into the package (vstar/demo/base/) with its record: what a bare `vstar run` "
        "then loads instead of training (the maintainers' rebuild; commit the folder)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Ray's, Ray Data's and Ray Train's log lines here too (always in <cache>/pretrain/logs/vstar.log)",
    )
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "serve",
        help="serve a model or a run's best cycle: OpenAI-compatible chat with video (Ray Serve)",
        description=_doc("vstar.serve.app"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", help="model folder, hub id, or run directory (serves its cycle with the best held-out accuracy)"
    )
    p.add_argument("config", nargs="?", help="YAML config; for a run directory its config.yaml by default")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    p.add_argument(
        "--served-model-name",
        help="the model name clients send and /v1/models lists (default: the model argument), as in `vllm serve`",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "report",
        help="write <run>/report.md with plots from <run>/metrics.jsonl",
        description=_doc("vstar.report"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory (runs/<name>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export",
        help="write a run's curated SFT records for a training framework: llava, llamafactory, qwen, messages",
        description=_doc("vstar.export"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument(
        "--format",
        choices=["llava", "llamafactory", "qwen", "messages"],
        default="llava",
        help="(default: llava)",
    )
    p.add_argument("--cycle", type=int, help="which cycle's records (default: the last)")
    p.add_argument(
        "--out",
        help="output file (default: <run>/export/<format>.json, .jsonl for messages; llamafactory: "
        "dataset_info.json beside it)",
    )
    p.add_argument("--video-root", help="write video paths relative to this folder (default: absolute paths)")
    p.add_argument(
        "--clips",
        help="cut each record's clip [start_s, end_s] into its own file in this folder, once, and point the record "
        "at it (loaders read whole videos)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "config",
        help="print the resolved config: defaults ← CONFIG ← overrides",
        description="Print the resolved config as YAML. With no arguments it lists every key "
        "and its default; errors name the bad key.",
    )
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "plan",
        help="video tokens, sequence length and GPU memory of a run; refuses a config that cannot fit",
        description=_doc("vstar.plan"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config with data.manifest and model.path set (a real run's job)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU in GiB (default: 80)")
    p.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vLLM's share of the GPU (default: 0.9, vLLM's own)"
    )
    p.set_defaults(func=cmd_plan)

    data = sub.add_parser("data", help="synthetic videos and manifest checks").add_subparsers(
        title="data commands", metavar="COMMAND", required=True
    )
    p = data.add_parser(
        "synth",
        help="write synthetic labeled videos and a manifest",
        description=_doc("vstar.data.synth"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder (videos/ and manifest.jsonl go here)")
    p.add_argument("--num-videos", type=int, default=48, help="number of videos (default: 48)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same labels and pixels (default: 0)")
    p.add_argument("--num-frames", type=int, default=48, help="frames per video (default: 48)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second (default: 8)")
    p.add_argument("--size", type=int, default=112, help="frame height and width in pixels (default: 112)")
    p.add_argument("--max-shapes", type=int, default=3, choices=[1, 2, 3], help="shapes per video at most (default: 3)")
    p.add_argument(
        "--min-visible",
        type=float,
        default=0.45,
        help="part of the clip each shape is visible at least (default: 0.45)",
    )
    p.set_defaults(func=cmd_synth)

    p = data.add_parser(
        "validate",
        help="validate a manifest; write kept and rejected rows",
        description=_doc("vstar.data.manifest").split("\n    >>>")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", help="JSONL, Parquet or CSV manifest")
    p.add_argument("--out", help="folder for samples.jsonl, rejected.jsonl and summary.json (default: no files)")
    p.set_defaults(func=cmd_validate)

    p = data.add_parser(
        "convert",
        help="convert Kinetics-700, FineDiving, STAR or any CSV/JSONL (+ YAML) to a manifest",
        description=_doc("vstar.data.adapters"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", choices=["kinetics700", "finediving", "star", "generic"], help="the annotations' format")
    p.add_argument(
        "--annotations",
        required=True,
        help="kinetics700: the CSV; finediving: the Annotations/ folder; star: STAR_<split>.json; generic: the YAML",
    )
    p.add_argument("--videos", required=True, help="folder of the videos (see each source above)")
    p.add_argument("--out", required=True, help="folder for samples.jsonl (the manifest), rejected.jsonl, summary.json")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser(
        "generate",
        help="run answer generation or label rationalization alone",
        description=_doc("vstar.generate.stage").split("Columns:")[0] + GENERATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config; omit for the embedded default")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument(
        "--mode",
        choices=["answer", "rationale"],
        default="answer",
        help="answer: the question alone; rationale: the question with its label as a hint",
    )
    p.add_argument("--out", help="output folder (default: <run>/cycle_1/answers or <run>/cycle_1/rationales)")
    p.add_argument(
        "--failed-from", metavar="DIR", help="only the samples with no passing candidate in this earlier stage's output"
    )
    p.add_argument("--limit", type=int, help="only the first N samples of the split")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="(default: train)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "train",
        help="finetune on SFT records with Ray Train (FSDP2, optional LoRA)",
        description=_doc("vstar.train.launch"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML config; omit for the defaults")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.add_argument("--data", required=True, help="SFT records: a JSONL file, or a folder of Parquet/JSONL files")
    p.add_argument("--init", help="the checkpoint to start from (default: model.path, or the tiny VLM)")
    p.add_argument("--out", required=True, help="folder for the exported Hugging Face model")
    p.add_argument("--name", default="train", help="Ray Train run name under <run>/; the same name resumes")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (default: train.epochs)")
    p.add_argument(
        "--checkpoint-every", type=int, help="optimizer steps between checkpoints (default: a quarter of the run)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "verify",
        help="verify answers against their labels (Parser-Verifier on Ray Data)",
        description=VERIFY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("answers", help="JSONL or Parquet: `labels` and `candidates` (list) or `answer` (text)")
    p.add_argument(
        "overrides", nargs="*", help="verify thresholds, e.g. verify.span_min_iou=0.6 verify.class_strict=false"
    )
    p.add_argument("--out", help="folder for verified.jsonl and summary.json (default: ANSWERS' folder/verified)")
    p.add_argument(
        "--label-sets",
        metavar="PATH",
        help="label_sets.json of the label sets the labels name (default: label_sets.json beside ANSWERS, if there)",
    )
    p.set_defaults(func=cmd_verify)
    return parser


GENERATE_HELP = """
Examples:
  vstar generate --mode answer demo.synth.num_videos=8 generate.num_candidates=4
  vstar generate --mode rationale --failed-from runs/demo/cycle_1/answers
  vstar generate jobs/demo.yaml generate.backend=vllm generate.num_gpus_per_actor=1 generate.num_actors=8
"""

VERIFY_HELP = """\
Verify answers against their labels with the Parser-Verifier, on Ray Data (a local Ray unless
RAY_ADDRESS is set). Each row needs `labels` (a list of {name, type, value}, or JSON text of one; a
class label may name a label set of --label-sets instead of listing its choices) and
either `candidates` (a list of answers) or `answer`; optional `duration_s` (for answers in seconds) and
`frame_width`/`frame_height` (for boxes in pixels). Writes every row with `verdicts` (per candidate and
label: parsed value, score, threshold, pass/fail, reason), `passed` and `num_passed`, and prints pass
rates per label type with the most common failure reasons.

  vstar verify runs/demo/answers.jsonl verify.number_rel_tol=0.05
"""


def _doc(module: str) -> str:
    import importlib

    return importlib.import_module(module).__doc__


def resolved_config(args, default=None):
    """CONFIG is optional, so `vstar run train.lr=1e-5` must read its first word as an override. Without CONFIG
    the `default` file applies (vstar run: the embedded default), else the built-in defaults."""
    from pathlib import Path

    from vstar.config import load_config

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]
    return load_config(path or default, overrides)


def cmd_run(args) -> int:
    from vstar.config import EMBEDDED_DEFAULT
    from vstar.driver import run
    from vstar.report import read_metrics, story

    run_dir = run(resolved_config(args, EMBEDDED_DEFAULT), fork=args.fork, verbose=args.verbose)
    print("\n".join(story(read_metrics(run_dir))))
    print(f"report: {run_dir / 'report.md'}")
    return 0


def cmd_pretrain(args) -> int:
    from vstar.config import EMBEDDED_DEFAULT
    from vstar.demo import base_model
    from vstar.driver import init_ray

    cfg = resolved_config(args, EMBEDDED_DEFAULT)
    if cfg.model.path or not cfg.demo.pretrain.steps:
        print("vstar: nothing to pretrain: set demo.pretrain.steps > 0 and leave model.path empty", file=sys.stderr)
        return 2
    from vstar import console

    console.attach(cfg.run.cache / "pretrain", verbose=args.verbose)  # the libraries' lines to its log, as a run's
    try:
        init_ray(cfg.run.ray_address, cfg.run.num_cpus, log_to_driver=args.verbose)
        if not args.ship:
            print(base_model(cfg))
            return 0
        from vstar.demo.pretrain import pretrained_base, ship

        trained = pretrained_base(cfg)  # never the shipped one: this is how it is made
        command = " ".join(["vstar pretrain --ship", *([args.config] if args.config else []), *args.overrides])
        print(ship(cfg, trained, command))
        return 0
    finally:
        console.detach()


def serve_config(args):
    """`vstar serve`'s config: the run directory's (the frames and backend it was trained with) or the given one,
    the overrides, then --host, --port and --served-model-name."""
    from pathlib import Path

    args.overrides += [f"serve.host={args.host}"] * bool(args.host) + [f"serve.port={args.port}"] * bool(args.port)
    if args.served_model_name:
        args.overrides.append(f"serve.served_model_name={json.dumps(args.served_model_name)}")
    run_cfg = Path(args.model) / "config.yaml"
    return resolved_config(args, run_cfg if run_cfg.is_file() else None)


def cmd_serve(args) -> int:
    from vstar.driver import init_ray
    from vstar.serve.app import serve
    from vstar.serve.proxy import CALLBACK, CALLBACK_ENV, body_limit, proxy_env

    cfg = serve_config(args)
    # Serve's HTTP proxy refuses oversized bodies before they reach a replica; it reads these when it starts, so a
    # local Ray must inherit them (a cluster's `ray start` sets them: cluster.yaml)
    os.environ.update(proxy_env(body_limit(cfg.serve.max_video_bytes)))
    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    if (cfg.run.ray_address or os.environ.get("RAY_ADDRESS", "local")) != "local":
        logging.getLogger("vstar").info(
            "joined a running cluster: its Serve proxy limits request bodies only if `ray start` had %s=%s "
            "(cluster.yaml exports it)",
            CALLBACK_ENV,
            CALLBACK,
        )
    serve(args.model, cfg, blocking=True)
    return 0


def cmd_report(args) -> int:
    from vstar.report import write_report

    print(f"report: {write_report(args.run)}")
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from vstar.export import export

    suffix = "jsonl" if args.format == "messages" else "json"
    out = args.out or Path(args.run) / "export" / f"{args.format}.{suffix}"
    done = export(args.run, args.format, out, args.cycle, video_root=args.video_root, clips=args.clips)
    cut = f", {done.clips_cut} clips cut into {args.clips}" if args.clips else ""
    print(f"{done.records} records → {done.path}{cut}")
    return 0


def cmd_config(args) -> int:
    print(resolved_config(args).to_yaml(), end="")
    return 0


def cmd_plan(args) -> int:
    from vstar.plan import plan

    result = plan(resolved_config(args), args.gpu_memory_gib, args.gpu_memory_utilization)
    print("\n".join(result.lines))
    for reason in result.refusals:
        print(f"vstar plan: does not fit: {reason}", file=sys.stderr)
    return 1 if result.refusals else 0


def cmd_generate(args) -> int:
    from pathlib import Path

    import pyarrow.parquet as pq

    from vstar.data.manifest import read_label_sets
    from vstar.driver import init_ray, prepare_manifest, prepare_model
    from vstar.evaluate import generation_stats
    from vstar.generate.sampling import Sampling
    from vstar.generate.stage import generate_stage
    from vstar.storage import Cycle, failed_ids, open_run

    cfg = resolved_config(args)
    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    run_dir = open_run(cfg)
    table = prepare_manifest(cfg, run_dir)
    ids = pq.read_table(table, columns=["sample_id", "split"]).to_pydict()
    keep = [i for i, split in zip(ids["sample_id"], ids["split"], strict=True) if split == args.split][: args.limit]
    if args.failed_from:
        failed = failed_ids(Path(args.failed_from))
        keep = [i for i in keep if i in failed]
    cycle = Cycle(run_dir, 1)
    out = Path(args.out) if args.out else cycle.answers if args.mode == "answer" else cycle.rationales
    sampling = Sampling.from_config(cfg.generate, cfg.run.seed)
    generate_stage(
        table, args.mode, out, prepare_model(cfg), cfg.generate, sampling, cfg.data, cfg.verify, cfg.model.dtype,
        keep=set(keep), label_sets=read_label_sets(table.parent / "label_sets.json"),
    )  # fmt: skip
    stats = generation_stats(out)
    print(
        f"{args.mode}: {stats['rows']} rows in {out}: {stats['passed']} with a passing candidate, {stats['errors']} errors"
    )
    return 0


def cmd_train(args) -> int:
    from vstar.driver import init_ray, prepare_model
    from vstar.train.launch import read_sft, train

    cfg = resolved_config(args)
    records = read_sft(args.data)
    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    result = train(
        records,
        args.init or prepare_model(cfg),
        args.out,
        cfg.train,
        cfg.data,
        cfg.run.dir,
        args.name,
        args.max_steps,
        args.checkpoint_every,
        cfg.run.seed,
    )
    if result.error:
        print(f"vstar: training failed: {result.error}", file=sys.stderr)
        return 1
    print(f"trained {result.metrics.get('step')} steps (loss {result.metrics.get('loss'):.4f}); model in {args.out}")
    return 0


def cmd_verify(args) -> int:
    import json
    from pathlib import Path

    import ray

    from vstar.config import load_config
    from vstar.data.manifest import SIDECAR, read_label_sets
    from vstar.driver import init_ray
    from vstar.storage import write_text
    from vstar.verify.batch import read_answers, summarize, verify_rows, write_jsonl

    cfg = load_config(None, args.overrides)
    df = read_answers(args.answers)
    sidecar = Path(args.label_sets) if args.label_sets else Path(args.answers).parent / SIDECAR
    label_sets = read_label_sets(sidecar) if args.label_sets or sidecar.is_file() else None
    out = Path(args.out) if args.out else Path(args.answers).parent / "verified"
    out.mkdir(parents=True, exist_ok=True)
    init_ray(cfg.run.ray_address, cfg.run.num_cpus)
    # vstar.generate.stage.verified takes no label sets yet: the same map, with them passed once to every batch
    kwargs = {"cfg": cfg.verify, "label_sets": label_sets}
    ds = ray.data.from_pandas(df).map_batches(verify_rows, batch_format="pandas", batch_size=256, fn_kwargs=kwargs)
    result = ds.to_pandas()
    write_jsonl(result, out / "verified.jsonl")
    summary = summarize(result["verdicts"])
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out / 'verified.jsonl'} and {out / 'summary.json'}")
    return 0


def cmd_synth(args) -> int:
    from vstar.data.synth import synthesize

    manifest = synthesize(
        args.out,
        args.num_videos,
        args.seed,
        args.num_frames,
        args.fps,
        args.size,
        True,
        args.max_shapes,
        args.min_visible,
    )
    print(f"wrote {args.num_videos} videos and {manifest}")
    return 0


def cmd_convert(args) -> int:
    from pathlib import Path

    from vstar.data.adapters import STREAMS
    from vstar.data.manifest import write_stream

    label_sets: dict = {}
    items = _shown(STREAMS[args.source](Path(args.annotations), Path(args.videos), label_sets))
    tally = write_stream(items, args.out, label_sets)
    print(tally.text())
    print(f"wrote {Path(args.out) / 'samples.jsonl'}")
    return 0 if tally.samples else 1  # missing videos are normal in these datasets; no sample at all is a failure


def _shown(items):
    """The items, each Rejected row printed to stderr as it passes."""
    from vstar.data.manifest import Rejected

    for item in items:
        if isinstance(item, Rejected):
            print(f"rejected {item.message}", file=sys.stderr)
        yield item


def cmd_validate(args) -> int:
    from vstar.data.manifest import Tally, stream_manifest, write_stream

    label_sets: dict = {}
    items = _shown(stream_manifest(args.manifest, label_sets))  # one row at a time: any size of manifest
    if args.out:
        tally = write_stream(items, args.out, label_sets)
    else:
        tally = Tally()
        for item in items:
            tally.add(item)
    print(tally.text())
    if args.out:
        print(f"wrote {args.out}")
    return 1 if tally.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
