"""The two domains of a cyclegan data set, found among the classes the core loaded.

The layouts its users have: junyanz/pytorch-CycleGAN-and-pix2pix's ``DIR/trainA``, ``DIR/trainB``
(and ``testA``, ``testB``), which the core reads as an image folder whose classes are those
sub-folders; an image folder with exactly two class folders (A and B named after them, split into
``train/`` and ``test/`` or not); or any labelled set with ``--set domains=horse,deer``.

Labelled domains: classes named ``DOMAIN:LABEL`` (``mnist:3``, ``mnist-m:3``; the data set
``mnist-m-pair`` is so) make two domains, ``mnist`` and ``mnist-m``, whose images keep a label
each (:func:`domain_labels`), so evaluation can score whether translation preserves it.
"""

from __future__ import annotations

from typing import Any

import torch

from gentool import DataError

#: Between a labelled domain's name and an image's label in a class name: ``mnist-m:3``.
LABEL_SEP = ":"


def domain_names(data: Any, domains: str | None) -> tuple[str, str]:
    """The class names of domains A and B in the training data (one-line DataError otherwise)."""
    names = list(data.class_names or [])
    if data.labels is None or not names:
        raise DataError(f"cyclegan needs two domains, and {data.name} has no class folders: give DIR/trainA and "
                        "DIR/trainB, two class folders, or a labelled set with --set domains=A,B")
    if domains:
        a, b = (p.strip() for p in domains.split(","))
        missing = [d for d in (a, b) if d not in names and d not in labelled_domains(names)]
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
    groups = labelled_domains(names)
    if len(groups) == 2:
        a, b = groups
        return a, b
    raise DataError(f"{data.name} has {len(names)} classes ({', '.join(names[:10])}): name the two domains with "
                    "--set domains=A,B, or give DIR/trainA and DIR/trainB")


def held_out_names(data: Any, a: str, b: str) -> tuple[str, str]:
    """Domain names in held-out data: ``testA``/``testB`` beside ``trainA``/``trainB``, else the same."""
    names = set(data.class_names or [])
    if (a, b) == ("trainA", "trainB") and {"testA", "testB"} <= names:
        return "testA", "testB"
    return a, b


def domain_images(data: Any, name: str) -> torch.Tensor:
    """The uint8 images of class (or labelled domain) ``name`` (a DataError naming it when there are none)."""
    names = list(data.class_names or [])
    groups = labelled_domains(names)
    if name in names:
        images = data.images[data.labels == names.index(name)]
    elif name in groups:
        images = data.images[torch.isin(data.labels, torch.tensor(list(groups[name].values())))]
    else:
        raise DataError(f"{data.name} has no class {name!r}; its classes: {', '.join(names[:20])}")
    if len(images) < 2:
        raise DataError(f"domain {name!r} of {data.name} has {len(images)} image(s): cyclegan needs at least 2")
    return images



def labelled_domains(names: list[str] | None) -> dict[str, dict[str, int]]:
    """``{domain: {label: class index}}`` when every class name is ``DOMAIN:LABEL``, else ``{}``."""
    groups: dict[str, dict[str, int]] = {}
    for i, n in enumerate(names or []):
        domain, sep, label = n.rpartition(LABEL_SEP)
        if not sep or not domain or not label:
            return {}
        groups.setdefault(domain, {})[label] = i
    return groups


def label_names(data: Any, a: str, b: str) -> list[str] | None:
    """The labels both domains ``a`` and ``b`` carry (in class order), or None when they do not
    carry the same ones (or none: plain two-domain data)."""
    groups = labelled_domains(list(data.class_names or []))
    if a not in groups or b not in groups or set(groups[a]) != set(groups[b]):
        return None
    return list(groups[a])


def domain_labels(data: Any, name: str, labels: list[str]) -> torch.Tensor:
    """Each image of domain ``name`` (in :func:`domain_images`' order) as its index in ``labels``."""
    groups = labelled_domains(list(data.class_names or []))[name]
    lut = torch.full((len(data.class_names),), -1, dtype=torch.int64)
    for label, cls in groups.items():
        lut[cls] = labels.index(label)
    own = lut[data.labels]
    return own[own >= 0]
