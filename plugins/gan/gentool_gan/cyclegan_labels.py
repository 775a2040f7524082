"""Label preservation of a cyclegan model, where both domains carry the same labels (issue 16).

A translation should change the domain, not the content: an MNIST 3 translated to MNIST-M should
still be a 3. The judge of each direction is a classifier of the *target* domain, trained on that
domain's real training images with their labels (the core's gentool-cnn trainer, as cgan's class
faithfulness uses it; cached by the data's fingerprint, so a second evaluation trains nothing) and
never on translations. ``label_preservation_a2b`` is the share of held-out A images whose B
translation the B classifier assigns to the A image's label (and the same for ``b2a``); the
classifier's accuracy on real held-out images of its own domain is the ceiling beside it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from gentool_gan.cyclegan_data import domain_images, domain_labels
from gentool_gan.cyclegan_task import translate

#: A judge: images (uint8 or [0, 1]) to predicted label indices.
Judge = Callable[[torch.Tensor], Any]


def label_preservation(g: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, judge: Judge,
                       device: Any = "cpu") -> float:
    """The share of ``g``'s translations of ``images`` that ``judge`` assigns to their ``labels``."""
    if len(images) == 0:
        return float("nan")
    from gentool.metrics import hit_share

    return hit_share(torch.as_tensor(judge(translate(g, images, torch.device(device)))), labels)


def accuracy(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``judge`` on real ``images``."""
    from gentool.metrics import hit_share

    return hit_share(torch.as_tensor(judge(images)), labels)


def domain_judge(train: Any, domain: str, labels: list[str], device: Any) -> Any:
    """A gentool-cnn classifier of ``labels`` trained on ``domain``'s images of ``train`` (cached);
    its ``predict`` is the judge, its ``name`` says which one it is."""
    from gentool import ImageDataset
    from gentool.metrics import get_extractor

    ds = ImageDataset(images=domain_images(train, domain), labels=domain_labels(train, domain, labels),
                      class_names=list(labels), name=f"{train.name}:{domain}")
    return get_extractor(None, ds, device=device)


def label_metrics(nets: dict[str, torch.nn.Module], train: Any, names: tuple[str, str], labels: list[str],
                  real: tuple[torch.Tensor, torch.Tensor], truth: tuple[torch.Tensor, torch.Tensor],
                  device: Any, judges: tuple[Judge, Judge] | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """``label_preservation_a2b``/``_b2a`` of held-out ``real`` = (A, B) images with ``truth`` labels,
    and ``classifier_test_accuracy_a``/``_b``, each judge on its own domain's held-out images.
    ``judges`` (A's, B's) default to classifiers trained on ``train``'s images of domains ``names``."""
    a, b = names
    settings: dict[str, str] = {}
    if judges is None:
        ja, jb = domain_judge(train, a, labels, device), domain_judge(train, b, labels, device)
        settings["label_classifiers"] = (f"{ja.name} (A, train accuracy {ja.accuracy:.3f}), {jb.name} (B, train "
                                         f"accuracy {jb.accuracy:.3f}): trained on each domain's training images")
        judges = (ja.predict, jb.predict)
    ja, jb = judges
    metrics = {
        "label_preservation_a2b": label_preservation(nets["a2b"], real[0], truth[0], jb, device),
        "label_preservation_b2a": label_preservation(nets["b2a"], real[1], truth[1], ja, device),
        "classifier_test_accuracy_a": accuracy(ja, real[0], truth[0]),
        "classifier_test_accuracy_b": accuracy(jb, real[1], truth[1]),
    }
    settings["label_preservation"] = (f"share of translations the target domain's classifier assigns to the source's "
                                      f"label ({len(labels)} labels, chance {1 / len(labels):.2f}); its ceiling is "
                                      "classifier_test_accuracy of the target domain")
    return metrics, settings
