"""How fast a run's report page opens in headless Chromium, and how big it is.

    python analysis/bench_report_page.py runs/digits [--lds-curve analysis/results/lds_curve.json]
        [--screenshot docs/report.png]

Writes the report (datamodels.report.write_report), then opens RUN/report/index.html
`--repeat` times in a fresh browser each (cold: a new renderer, the way a reader opens it)
and again in the same browser (warm), from navigation to the load event (the targets table is
drawn by then), and checks it as the test does (console errors, broken images and links).
Prints ONE JSON line. The screenshot is the top of the page and its targets table, scaled
to `--width` pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--lds-curve", default=None)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--screenshot", default=None)
    p.add_argument("--width", type=int, default=1000, help="pixels of the saved screenshot's width")
    a = p.parse_args(argv)

    from datamodels.report import write_report
    from datamodels.report.browser import Chromium, check_report
    from datamodels.runs import open_run

    run = open_run(a.run)
    t0 = time.perf_counter()
    summary = write_report(run, lds_curve=a.lds_curve)
    report_s = time.perf_counter() - t0
    page = run.report_dir / "index.html"
    cold, warm = [], []
    for _ in range(a.repeat):
        with Chromium() as b:
            cold.append(b.open(page))
            warm.append(b.open(page))
    check = check_report(page)
    out = {"run": str(run.path), "targets_total": summary["page"]["targets_total"],
           "targets_in_table": summary["page"]["targets_in_table"], "page_bytes": page.stat().st_size,
           "page_mb": round(page.stat().st_size / 2**20, 2), "load_s_cold_median": round(statistics.median(cold), 3),
           "load_s_cold": [round(x, 3) for x in cold], "load_s_warm_median": round(statistics.median(warm), 3),
           "write_report_s": round(report_s, 1), "errors": check["errors"], "broken_images": check["broken_images"],
           "broken_links": check["broken_links"], "images_walked": check["images"], "table_pages": check["pages"]}
    if a.screenshot:
        from PIL import Image

        with Chromium(width=1300, height=1900) as b:
            b.open(page)
            raw = Path(a.screenshot).with_suffix(".raw.png")
            b.screenshot(raw)
        im = Image.open(raw).convert("RGB")
        im = im.resize((a.width, round(im.height * a.width / im.width)), Image.LANCZOS)
        im = im.quantize(colors=128)  # a small PNG for the README
        im.save(a.screenshot, optimize=True)
        raw.unlink()
        out["screenshot"] = a.screenshot
        out["screenshot_bytes"] = Path(a.screenshot).stat().st_size
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
