"""The `vstar` command. `vstar --help` and `vstar COMMAND --help` explain each command."""

from __future__ import annotations

import argparse
import logging
import sys

DESCRIPTION = """\
vstar: Video-STaR on Ray. Turns any labeled video dataset into video instruction-tuning data by
cycling a video language model through answer generation, label filtering, label rationalization
and re-training.

Start here:
  vstar run                            the embedded default: local Ray, synthetic videos, tiny offline VLM
  vstar run jobs/demo.yaml train.lr=1e-5 data.num_frames=16
                                       a config file plus dotted overrides
  vstar config                         every config key with its default
  vstar data synth --out data/synth    write synthetic labeled videos and their manifest
  vstar data validate MANIFEST         check a manifest; bad rows are reported with line and field
"""

OVERRIDES_HELP = "dotted overrides such as train.lr=1e-5 data.num_frames=16 (values are parsed as YAML)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from vstar.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"vstar: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vstar", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="run Video-STaR (see `vstar run --help` for what runs today)",
        description=_doc("vstar.driver"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config",
        nargs="?",
        help="YAML config (only the keys that differ from the defaults); omit for the embedded default",
    )
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "config",
        help="print the resolved config: defaults ← CONFIG ← overrides",
        description="Print the resolved config as YAML. With no arguments it lists every key "
        "and its default; errors name the bad key.",
    )
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_config)

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
    return parser


def _doc(module: str) -> str:
    import importlib

    return importlib.import_module(module).__doc__


def resolved_config(args):
    """CONFIG is optional, so `vstar run train.lr=1e-5` must read its first word as an override."""
    from pathlib import Path

    from vstar.config import load_config

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]
    return load_config(path, overrides)


def cmd_run(args) -> int:
    from vstar.driver import run

    run(resolved_config(args))
    return 0


def cmd_config(args) -> int:
    print(resolved_config(args).to_yaml(), end="")
    return 0


def cmd_synth(args) -> int:
    from vstar.data.synth import synthesize

    manifest = synthesize(args.out, args.num_videos, args.seed, args.num_frames, args.fps, args.size, progress=True)
    print(f"wrote {args.num_videos} videos and {manifest}")
    return 0


def cmd_validate(args) -> int:
    from vstar.data.manifest import load_manifest, write_report

    report = load_manifest(args.manifest)
    for rejected in report.rejected:
        print(f"rejected {rejected.message}", file=sys.stderr)
    print(report.summary())
    if args.out:
        print(f"wrote {write_report(report, args.out).parent}")
    return 1 if report.rejected else 0


if __name__ == "__main__":
    sys.exit(main())
