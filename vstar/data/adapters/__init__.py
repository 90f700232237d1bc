"""Converters from the paper's source datasets, in their published formats, to a validated manifest.

    vstar data convert SOURCE --annotations PATH --videos DIR --out MANIFEST_DIR

Each converter is a pure function `convert(annotations, videos) -> ManifestReport` (no Ray): the samples it could
make, validated like any manifest, and every row it could not use with the reason (a missing video, an unlabelled
row, a question with no keyframe in its clip). `vstar data convert` writes them one at a time (`STREAMS`,
`write_stream`): MANIFEST_DIR/samples.jsonl (the manifest; absolute video paths; a class label with many classes
names a label set, defined on a `label_sets` line before its first use), rejected.jsonl (where, field and reason of each
row left out) and summary.json. A missing video is never fatal; a missing annotation file is. Times are fractions
of the clip, boxes normalized [x1, y1, x2, y2], sequences in temporal order with repeats kept. Questions come from
the task's bank in vstar.data.questions.TASK_BANKS, assigned with the run's seed, and never contain the answer;
STAR's own questions are kept as they are.

kinetics700  the CSVs of github.com/cvdfoundation/kinetics-dataset (label, youtube_id, time_start, time_end, split).
             ANNOTATIONS: train.csv or validate.csv. VIDEOS: trimmed clips {youtube_id}_{start:06d}_{end:06d}.mp4
             anywhere below, or full videos {youtube_id}.mp4 (used with the clip's bounds).
             Task kinetics_action: class `action` of label set `kinetics700` (every class of the CSV).
finediving   github.com/xujinglin/FineDiving (annotations in the repository, frames on request from the authors).
             ANNOTATIONS: its Annotations/ folder of pickles. VIDEOS: one mp4 per dive at {competition}/{index}.mp4,
             made from the frame folders (or {competition}_{index}.mp4).
             Tasks finediving_sequence (sequence of sub-actions), finediving_next / finediving_previous (class: the
             step after / before a named one), finediving_score and finediving_difficulty (number).
star         STAR_train.json / STAR_val.json from bobbywu.com/STAR, action_classes.txt and object_classes.txt from
             github.com/csbobby/STAR_Benchmark (annotations/STAR_classes) beside the JSON; Charades 480p videos
             {video_id}.mp4 in VIDEOS (prior.allenai.org/projects/charades).
             Tasks star_qa (text, STAR's question), star_actions (sequence, or class labels when two actions start
             together), star_action_span (span), star_object (class), star_box (box at a time), star_same (class
             yes/no).
generic      any CSV or JSONL table. ANNOTATIONS: a YAML file naming the table and its video and label columns.
             VIDEOS: the folder the video column is relative to. Tasks and label types: the ones the YAML names.

Each module's docstring gives the format it reads and the samples it writes.
"""

from vstar.data.adapters import finediving, generic, kinetics700, star

CONVERTERS = {
    "kinetics700": kinetics700.convert,
    "finediving": finediving.convert,
    "star": star.convert,
    "generic": generic.convert,
}
# The same, one Sample or Rejected row at a time (`stream(annotations, videos, label_sets)`, the label sets added to
# the dict given): what `vstar data convert` writes. Kinetics-700 streams its CSV; the others are small enough to
# convert in memory first.
STREAMS = {
    "kinetics700": kinetics700.stream,
    "finediving": finediving.stream,
    "star": star.stream,
    "generic": generic.stream,
}

__all__ = ["CONVERTERS", "STREAMS"]
