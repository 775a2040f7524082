"""The two domains of a cyclegan data set, found among the classes the core loaded.

The layouts its users have: junyanz/pytorch-CycleGAN-and-pix2pix's ``DIR/trainA``, ``DIR/trainB``
(and ``testA``, ``testB``), which the core reads as an image folder whose classes are those
sub-folders; an image folder with exactly two class folders (A and B named after them, split into
``train/`` and ``test/`` or not); or any labelled set with ``--set domains=horse,deer``.
"""

from __future__ import annotations

from typing import Any

import torch

from gentool import DataError


def domain_names(data: Any, domains: str | None) -> tuple[str, str]:
    """The class names of domains A and B in the training data (one-line DataError otherwise)."""
    names = list(data.class_names or [])
    if data.labels is None or not names:
        raise DataError(f"cyclegan needs two domains, and {data.name} has no class folders: give DIR/trainA and "
                        "DIR/trainB, two class folders, or a labelled set with --set domains=A,B")
    if domains:
        a, b = (p.strip() for p in domains.split(","))
        missing = [d for d in (a, b) if d not in names]
        if missing:
            raise DataError(f"{data.name} has no class {missing[0]!r} (domains={domains}); its classes: {', '.join(names[:20])}")
        return a, b
    if "trainA" in names or "trainB" in names:
        for have, need in (("trainA", "trainB"), ("trainB", "trainA")):
            if have in names and need not in names:
                raise DataError(f"{data.name} has {have}/ but no {need}/: cyclegan needs both domains")
        return "trainA", "trainB"
    if len(names) == 2:
        return names[0], names[1]
    raise DataError(f"{data.name} has {len(names)} classes ({', '.join(names[:10])}): name the two domains with "
                    "--set domains=A,B, or give DIR/trainA and DIR/trainB")


def held_out_names(data: Any, a: str, b: str) -> tuple[str, str]:
    """Domain names in held-out data: ``testA``/``testB`` beside ``trainA``/``trainB``, else the same."""
    names = set(data.class_names or [])
    if (a, b) == ("trainA", "trainB") and {"testA", "testB"} <= names:
        return "testA", "testB"
    return a, b


def domain_images(data: Any, name: str) -> torch.Tensor:
    """The uint8 images of class ``name`` (a DataError naming the class when there are none)."""
    names = list(data.class_names or [])
    if name not in names:
        raise DataError(f"{data.name} has no class {name!r}; its classes: {', '.join(names[:20])}")
    images = data.images[data.labels == names.index(name)]
    if len(images) < 2:
        raise DataError(f"domain {name!r} of {data.name} has {len(images)} image(s): cyclegan needs at least 2")
    return images
