"""`diffclust evaluate`: score assignments (a CSV or a run folder) against known labels."""

from __future__ import annotations

import json
from pathlib import Path

from diffclust.cli.options import print_scores
from diffclust.engine.atomic import read_json_object
from diffclust.errors import DiffclustError


def add_parser(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score assignments against known labels (ACC, NMI, ARI)",
                                   description="Score an assignments CSV against a labels.csv; labels are only for scoring.")
    evaluate.add_argument("assignments", type=Path, help="assignments.csv from fit or predict, or a run folder")
    evaluate.add_argument("--labels", type=Path, default=None,
                          help="labels.csv (file,label[,class_name,split]), the data folder fit read (with a labels.csv, or one sub-folder "
                               "per class), or a built-in data set's name (usps); default for a run folder: the data it read")
    evaluate.add_argument("--split", default=None, help="score only rows of labels.csv with this split (e.g. test)")
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")


def _evaluation_inputs(assignments: Path, labels: Path | None) -> tuple[Path, Path]:
    """(assignments.csv, labels) for `evaluate`: a run folder gives its assignments.csv and,
    unless --labels is given, the data it was fitted on."""
    if assignments.is_dir():
        run_dir, assignments = assignments, assignments / "assignments.csv"
        if not assignments.is_file():
            raise DiffclustError(f"'{run_dir}' holds no assignments.csv: is it a finished `diffclust fit` run folder?")
        if labels is None and (run_dir / "labels.csv").is_file():  # feature rows given with their labels (CLUDI --labels)
            labels = run_dir / "labels.csv"
        if labels is None:
            data = (read_json_object(run_dir / "run.json") or {}).get("data")
            if not data:
                raise DiffclustError(f"'{run_dir}' does not record the data it read: pass --labels labels.csv (or the data folder).")
            labels = Path(data)
    if labels is None:
        raise DiffclustError("evaluate needs --labels labels.csv (or the data folder) for an assignments file.")
    return assignments, labels


def run(args) -> int:
    from diffclust.cluster.metrics import clustering_scores
    from diffclust.outputs import read_assignments, read_label_table

    assignments, labels_source = _evaluation_inputs(args.assignments, args.labels)
    assigned, skipped = read_assignments(assignments)
    labels, names, were_names = read_label_table(labels_source, split=args.split)
    common = sorted(set(assigned) & set(labels))
    if not common:
        raise DiffclustError(f"No file in {assignments} appears in {labels_source}" + (f" (split {args.split})" if args.split else "") + ".")
    missing = len(labels) - len(common)
    scores = clustering_scores([labels[f] for f in common], [assigned[f] for f in common])
    scores.update(scored=len(common), labelled_without_assignment=missing, skipped_rows=skipped)
    if were_names:  # the numbers stand for the names given, in sorted order
        scores["classes"] = {str(number): name for number, name in sorted(names.items())}
    if args.json:
        print(json.dumps(scores, indent=2))
        return 0
    print(f"Scored {len(common)} images" + (f" (split {args.split})" if args.split else "")
          + (f"; {missing} labelled images have no assignment" if missing else "") + ".")
    if were_names:
        print(f"The labels are class names, numbered in sorted order: {', '.join(f'{number} = {name}' for number, name in sorted(names.items()))}.")
    print_scores(scores)
    return 0
