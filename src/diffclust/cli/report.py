"""`diffclust report`: the offline HTML report of a run."""

from __future__ import annotations

from pathlib import Path

from diffclust.cli.options import add_report_options


def add_parser(commands) -> None:
    report = commands.add_parser("report", help="write a browsable HTML report of a run (galleries, map, names, scores)",
                                 description="Write RUN_DIR/report/index.html (offline: images and script beside it) and "
                                             "RUN_DIR/clusters.csv (cluster, size, mean confidence, names).")
    report.add_argument("run_dir", type=Path, help="a finished `diffclust fit` run folder")
    add_report_options(report)
    report.add_argument("--out", type=Path, default=None, help="report folder (default: RUN_DIR/report/)")


def write_report(run_dir: Path, args, report_folder: Path | None = None) -> None:
    from diffclust.report import build_report

    page = build_report(run_dir, report_folder, sort=args.sort, per_cluster=args.per_cluster, map_points=args.map_points,
                        names=args.names, prototypes=args.prototypes)
    print(f"Report: {page}  (open it in a browser; it works offline); cluster names and sizes in {run_dir / 'clusters.csv'}")


def run(args) -> int:
    write_report(args.run_dir, args, args.out)
    return 0
