"""The README's report picture: build the report of a run and photograph it in headless Chromium.

    diffclust fit ../shared/data/usps --method diec --k 10 --backbone usps-ddpm --out runs/usps
    python tools/report_screenshot.py runs/usps --out docs/report.jpg

Needs Debian's chromium (`apt-get install chromium`). The page is rendered at 1280 px wide and
the top `--height` pixels are kept, as a JPEG (`--skip` drops that many pixels from the top
first, to show the clusters rather than the header). The report draws DiFiC's prototypes when
that is cheap (see build_report); `--no-prototypes` leaves them out.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from diffclust.report import build_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/report.jpg"))
    parser.add_argument("--height", type=int, default=2000, help="pixels of the page kept, from the top")
    parser.add_argument("--skip", type=int, default=0, help="pixels dropped from the top of the kept part")
    parser.add_argument("--no-prototypes", action="store_true", help="DiFiC: do not draw the cluster prototypes")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("No Chromium here: apt-get install chromium.")
    page = build_report(args.run_dir, prototypes=False if args.no_prototypes else None)
    with tempfile.TemporaryDirectory() as temporary:
        shot = Path(temporary) / "page.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size=1280,{args.height + args.skip}",
                        "--virtual-time-budget=5000", f"--screenshot={shot}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=180)
        image = Image.open(shot).convert("RGB")
        image = image.crop((0, args.skip, image.width, image.height))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out, quality=85)
    print(f"{page} -> {args.out} ({image.size[0]} x {image.size[1]})")


if __name__ == "__main__":
    main()
