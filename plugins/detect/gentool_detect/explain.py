"""Heatmaps of what drove a decision, laid over the image in ``--explain DIR``.

* A trained detector: Grad-CAM (Selvaraju et al. 2017) of the "generated" logit at its last
  convolution, per tile, stitched over the whole image.
* Any other scorer (``--model``, ``--discriminator``): occlusion (Zeiler & Fergus 2014): the
  image is cut into an 8 x 8 grid; each cell in turn is filled with the image's mean colour and
  the drop in P(generated) is that cell's heat (64 extra scorings per image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def gradcam_map(scorer, img: Image.Image) -> np.ndarray:
    """A ``[H, W]`` map in ``[0, 1]``: where the evidence for "generated" lies (Grad-CAM per tile)."""
    from gentool_detect import tiling
    from gentool_detect.imageio import to_tensor

    x = tiling.pad_to(to_tensor(img, scorer.channels), scorer.size)
    tiles, boxes = tiling.tiles(x, scorer.size)
    net = scorer.net
    store: dict[str, torch.Tensor] = {}
    hook = net.last_conv().register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
    try:
        with torch.enable_grad():
            logits = net(tiles)
            acts = store["a"]
            grads = torch.autograd.grad(logits.sum(), acts)[0]
    finally:
        hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(scorer.size, scorer.size), mode="bilinear", align_corners=False)[:, 0].detach()
    total = torch.zeros(x.shape[-2:])
    count = torch.zeros(x.shape[-2:])
    for c, (t, left) in zip(cam, boxes):
        total[t: t + scorer.size, left: left + scorer.size] += c
        count[t: t + scorer.size, left: left + scorer.size] += 1
    m = (total / count.clamp(min=1))[: img.height, : img.width].numpy()
    return m / m.max() if m.max() > 0 else m


OCCLUSION_GRID = 8


def occlusion_map(scorer, img: Image.Image, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """A ``[H, W]`` map in ``[0, 1]``: how much hiding each grid cell lowers P(generated)."""
    base = scorer.score(img).probability
    arr = np.asarray(img)
    mean = arr.reshape(-1, arr.shape[-1] if arr.ndim == 3 else 1).mean(0).astype(arr.dtype)
    ys = np.linspace(0, img.height, grid + 1).round().astype(int)
    xs = np.linspace(0, img.width, grid + 1).round().astype(int)
    heat = np.zeros((img.height, img.width), dtype=np.float64)
    for i in range(grid):
        for j in range(grid):
            if ys[i] == ys[i + 1] or xs[j] == xs[j + 1]:
                continue
            hidden = arr.copy()
            hidden[ys[i]: ys[i + 1], xs[j]: xs[j + 1]] = mean if arr.ndim == 3 else mean[0]
            drop = base - scorer.score(Image.fromarray(hidden, img.mode)).probability
            heat[ys[i]: ys[i + 1], xs[j]: xs[j + 1]] = max(drop, 0.0)
    return heat / heat.max() if heat.max() > 0 else heat


def overlay(img: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``heat`` (``[H, W]`` in ``[0, 1]``) coloured (jet) over ``img``."""
    from matplotlib import colormaps

    colour = (colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    base = np.asarray(img.convert("RGB"), dtype=np.float32)
    out = (1 - alpha) * base + alpha * colour.astype(np.float32)
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def heatmap_image(scorer, img: Image.Image) -> Image.Image:
    """The heatmap overlay of ``img`` (small images enlarged for viewing): Grad-CAM for a trained
    detector, occlusion for any other scorer."""
    heat = gradcam_map(scorer, img) if hasattr(scorer, "net") else occlusion_map(scorer, img)
    out = overlay(img, heat)
    if max(out.size) < 256:  # an 8x8 or 32x32 image is unreadable at its size
        k = max(1, 256 // max(out.size))
        out = out.resize((out.width * k, out.height * k), Image.Resampling.NEAREST)
    return out


def write(scorer, img: Image.Image, folder: Path, name: str) -> Path:
    """Write ``folder/<name>.heatmap.png``: :func:`heatmap_image` of ``img``."""
    out = heatmap_image(scorer, img)
    target = folder / f"{name}.heatmap.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        out.save(target)
    except OSError as exc:  # a user's folder: one line, not a traceback
        import gentool

        raise gentool.GentoolError(f"--explain: cannot write {target}: {exc.strerror or exc}") from None
    return target
