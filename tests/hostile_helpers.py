"""What the hostile-input tests share: a tiny real/fake image folder a detector learns in a second."""

from __future__ import annotations

from pathlib import Path


def write_real_fake(folder: Path, n: int = 24) -> Path:
    """``folder/real`` (smooth 16 px textures) and ``folder/fake`` (their 8 px copies blown up):
    an image folder with two classes; returns ``folder``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind in ("real", "fake"):
        (folder / kind).mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        real = np.asarray(Image.fromarray(small).resize((16, 16), Image.Resampling.BICUBIC))
        fake = np.asarray(Image.fromarray(real).resize((8, 8)).resize((16, 16), Image.Resampling.NEAREST))
        Image.fromarray(real).save(folder / "real" / f"{i}.png")
        Image.fromarray(fake).save(folder / "fake" / f"{i}.png")
    return folder
