"""`diffclust search`: the clustering-optimal UNet layer and timestep alone."""

from __future__ import annotations

from pathlib import Path

from diffclust.backbones.names import SD15_HUB_ID
from diffclust.cli.options import (
    add_backbone_and_device,
    add_search_settings,
    check_images_and_backbone,
    common_settings,
    default_run_folder,
    search_settings,
    whole,
)


def add_parser(commands) -> None:
    search = commands.add_parser("search", help="find the clustering-optimal UNet layer and timestep (DiEC's search)",
                                 description="Score UNet layers x timesteps by k-means clusterability on a subset of DATA; "
                                             "print the chosen pair and write search.csv, search.png (score against t, a line per layer) "
                                             "and search.json to --out.")
    search.add_argument("data", help="image folder, or a built-in data set (usps); labels are not used")
    search.add_argument("--k", type=whole(2), required=True, help="number of clusters k-means looks for")
    search.add_argument("--out", type=Path, default=None, help="folder for search.csv/png/json (default: runs/<data folder name>-search)")
    search.add_argument("--batch-size", type=whole(1), default=256, help="images per UNet batch")
    add_backbone_and_device(search)
    add_search_settings(search)


def run(args) -> int:
    check_images_and_backbone(args.data, args.backbone or SD15_HUB_ID, args.folder_labels)
    from diffclust.data.collection import SEARCH_MARKER
    from diffclust.engine.atomic import claim_output_folder
    from diffclust.methods.diec import DiEC

    out = args.out or default_run_folder(args.data, Path(args.data).resolve().name, "-search")
    claim_output_folder(out, SEARCH_MARKER, "--out", "the search's files")  # never a fit's run folder, nor someone's folder
    model = DiEC(args.k, batch_size=args.batch_size, output_dir=out, **common_settings(args), **search_settings(args))
    result = model.search_pair(args.data)
    print(f"Chosen: {result.layer} at t={result.timestep} ({result.score_name} {result.score:.4g}); "
          f"{result.strategy} search, {result.n_evaluations} evaluations over {result.feature_passes} feature passes.")
    print(f"Use it: diffclust fit {args.data} --method diec --k {args.k} --layer {result.layer} --timestep {result.timestep}")
    print(f"Wrote {out / 'search.csv'}, {out / 'search.png'} and {out / 'search.json'}.")
    return 0
