"""RUN/report/index.html: the report as one self-contained page that opens offline in any browser.

The page is rendered from a Jinja2 template shipped with the package
(``templates/report.html.j2``). Figures are inlined as PNG data URIs; the
targets table is one JSON blob in the page (every image in it encoded once)
that a small script pages through, so a large run stays a fast page: at most
``max_targets`` targets, ``top`` influencers a side, images no larger than
``thumb`` pixels, ``max_features`` feature columns for tabular data. The caps
are written on the page. Every number the page shows beside a ``data-key``
is read from summary.json's dict, so a test can hold one against the other.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from ..io import write_text

MAX_TARGETS = 1000  # targets in the browsable table
PER_PAGE = 25  # table rows shown at once
TOP = 5  # influencers a side
THUMB = 48  # the most pixels an inlined image has on a side
MAX_FEATURES = 12  # feature columns shown for tabular data


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_data_uri(path: Path) -> str:
    return png_data_uri(Path(path).read_bytes())


def image_data_uri(img: np.ndarray, thumb: int = THUMB) -> str:
    """One image ([H, W], [C, H, W] or [H, W, C], any range) as a PNG data URI, scaled to its own range
    (grey images as dark ink on white, like the report's figures), no larger than `thumb` pixels a side."""
    from PIL import Image

    img = np.asarray(img, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    lo, hi = float(img.min()), float(img.max())
    u8 = np.round(255 * (img - lo) / (hi - lo + 1e-8)).astype(np.uint8)
    if u8.ndim == 2:
        u8 = 255 - u8
    im = Image.fromarray(u8)
    if max(im.size) > thumb:
        im.thumbnail((thumb, thumb))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return png_data_uri(buf.getvalue())


def is_tabular(x: np.ndarray) -> bool:
    """Features [n, d] (a table or an embedding), not images."""
    return np.asarray(x).ndim == 2


def table_data(attr, columns, per_target, sizes, tx, ty, trx, try_, top: int = TOP,
               max_features: int = MAX_FEATURES, thumb: int = THUMB) -> dict:
    """The targets table's JSON blob: one row per target column, each training example used encoded once.

    tx, ty: display inputs and labels of every target column; trx, try_: the pool's.
    sizes: brittleness sizes (None: not found / already wrong) in `columns` order.
    """
    tabular = is_tabular(trx)
    base = attr.base_margin("full", columns)
    rows, used = [], set()
    for r, j in enumerate(columns):
        j = int(j)
        infl = attr.influencers(j, top)
        loc = attr.locate(j)
        pos = [[e["train_index"], round(e["weight"], 4)] for e in infl["positive"]]
        neg = [[e["train_index"], round(e["weight"], 4)] for e in infl["negative"]]
        used.update(i for i, _ in pos + neg)
        lds = per_target[j]
        rows.append({"col": j, "set": loc["set"], "i": loc["index_in_set"], "y": int(ty[j]),
                     "lds": round(float(lds), 4) if np.isfinite(lds) else None,
                     "margin": round(float(base[r]), 4), "nnz": infl["n_nonzero"], "britt": sizes[r],
                     "pos": pos, "neg": neg})
    if tabular:
        d = trx.shape[1]
        f = min(d, max_features)
        # colour by the pool's z-score, so a row reads as "high" or "low" for that feature
        mu, sd = trx.mean(axis=0), trx.std(axis=0) + 1e-12
        feat = {"names": [f"f{c}" for c in range(f)], "shown": f, "total": d,
                "mean": [round(float(v), 4) for v in mu[:f]], "std": [round(float(v), 4) for v in sd[:f]]}
        train = {str(i): {"y": int(try_[i]), "x": [float(f"{v:.4g}") for v in trx[i, :f]]} for i in sorted(used)}
        for row in rows:
            row["x"] = [float(f"{v:.4g}") for v in tx[row["col"], :f]]
    else:
        feat = None
        train = {str(i): {"y": int(try_[i]), "img": image_data_uri(trx[i], thumb)} for i in sorted(used)}
        for row in rows:
            row["img"] = image_data_uri(tx[row["col"]], thumb)
    return {"kind": "features" if tabular else "images", "features": feat, "train": train, "rows": rows}


def render(context: dict) -> str:
    """The page's HTML from the shipped template."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("datamodels.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    return env.get_template("report.html.j2").render(**context)


def fmt_num(x, nd: int = 4) -> str:
    """A summary number as the page writes it: integers as they are, floats to `nd` decimals, None as "–"."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x)).lower()
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{nd}f}"


def write_page(out_dir: Path, context: dict) -> Path:
    """Render the template with `context` into out_dir/index.html (atomically); returns the path."""
    path = Path(out_dir) / "index.html"
    write_text(path, render(context))
    return path
