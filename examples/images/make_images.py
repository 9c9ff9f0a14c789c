"""Write scikit-learn's 1,797 digits as real PNG files in the class-subfolder layout.

pool/0/0003.png ... pool/9/...  the first 1,300 digits (in a fixed shuffled order)
test/0/...                      the other 497
Each image is the 8x8 digit upscaled to 16x16 (nearest), grey levels 0..255.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

here = Path(__file__).resolve().parent
d = load_digits()
order = np.random.default_rng(0).permutation(len(d.target))
for rank, i in enumerate(order):
    folder = here / ("pool" if rank < 1300 else "test") / str(d.target[i])
    folder.mkdir(parents=True, exist_ok=True)
    img = (d.images[i] * 255 / 16).astype(np.uint8).repeat(2, 0).repeat(2, 1)
    Image.fromarray(img).save(folder / f"{i:04d}.png")
print(f"wrote {len(order)} PNG files under {here}/pool and {here}/test")
