"""``gentool evaluate gan|cgan|dcgan``: sample quality against held-out real images, and for cgan
whether the samples are of the asked class.

- ``fd``, ``kid_mean``/``kid_std``, ``precision``, ``recall``, ``density``, ``coverage`` of ``-n``
  EMA samples against the held-out split, in the feature space named under ``features`` (the
  offline ``gentool-cnn`` trained on the training split by default: its Fréchet distance is not
  Inception FID).
- cgan ``class_faithfulness``: the share of samples that an independent classifier (the
  gentool-cnn, trained on the real training split's labels, never on generated images) assigns
  to the label they were drawn for; ``classifier_test_accuracy`` says how good that judge is.
- cgan ``cas``: the Classification Accuracy Score (Ravuri & Vinyals 2019): a classifier trained on
  generated images only, tested on the real test split, beside ``cas_real_baseline``, the same
  classifier trained on as many real training images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gentool import EvaluateResult, GentoolError

from gentool_gan.sampling import load_generator
from gentool_gan.task import generate

CAS_MAX_IMAGES = 10_000


def accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, side: int, device: Any) -> float:
    """Top-1 accuracy of a gentool SmallCNN ``net`` on uint8 or [0, 1] images."""
    from gentool.metrics import prepare_images

    channels = 1 if images.shape[1] == 1 else 3
    correct = 0
    net.eval()
    with torch.no_grad():
        for s in range(0, len(images), 512):
            x = prepare_images(images[s : s + 512], channels, (side, side), antialias=True).to(device)
            correct += int((net(x).argmax(1).cpu() == labels[s : s + 512]).sum())
    return correct / max(1, len(images))


def classification_accuracy_score(g: torch.nn.Module, z_dim: int, num_classes: int, train: Any, test: Any,
                                  count: int, epochs: int | None, seed: int, device: Any) -> dict[str, float]:
    """CAS: train the gentool SmallCNN on ``count`` generated images (balanced labels) and, for the
    baseline, on ``count`` real training images; both tested on the real ``test`` split."""
    from gentool.metrics import MAX_CNN_SIDE, train_feature_classifier

    side = int(min(max(train.images.shape[-2:]), MAX_CNN_SIDE))
    labels = torch.arange(count) % num_classes
    fake = generate(g, count, torch.Generator().manual_seed(seed + 1), device, z_dim, labels)
    net_fake, _, ran = train_feature_classifier(fake, labels, num_classes, side=side, epochs=epochs, seed=seed, device=device)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 2))[:count]
    net_real, _, _ = train_feature_classifier(train.images[idx], train.labels[idx], num_classes, side=side, epochs=epochs,
                               seed=seed, device=device)
    return {"cas": accuracy(net_fake, test.images, test.labels, side, device),
            "cas_real_baseline": accuracy(net_real, test.images, test.labels, side, device),
            "cas_images": int(count), "cas_epochs": int(ran)}


def class_faithfulness(judge: Any, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The share of ``images`` that the classifier ``judge`` assigns to the label each was drawn
    for, and the lowest such share of any one label."""
    from gentool.metrics import hit_share

    pred = torch.from_numpy(judge.predict(images))
    per_class = [hit_share(pred[labels == c], labels[labels == c]) for c in labels.unique().tolist()]
    return hit_share(pred, labels), float(np.min(per_class))


def label_judge(ext: Any, train: Any, device: Any) -> Any:
    """The classifier that scores class faithfulness: the feature extractor where it is the data's
    own label classifier, else the data's gentool-cnn; None where the data has no labels."""
    from gentool.metrics import get_extractor

    judge = ext if getattr(ext, "task", None) == "labels" else get_extractor(None, train, device=device)
    return judge if getattr(judge, "task", None) == "labels" else None


def label_scores(judge: Any, fake: torch.Tensor, labels: torch.Tensor, test: Any) -> dict[str, float]:
    """Class faithfulness of ``fake`` (drawn for ``labels``), its worst class, and the judge's own
    accuracy on the labelled test images (its ceiling) where they have labels."""
    from gentool.metrics import hit_share

    scores = dict(zip(("class_faithfulness", "class_faithfulness_worst_class"), class_faithfulness(judge, fake, labels)))
    if test.labels is not None:
        scores["classifier_test_accuracy"] = hit_share(judge.predict(test.images), test.labels)
    return scores


def evaluate(model: str, job: Any) -> EvaluateResult:
    """The ``gentool_evaluate`` hook body for ``model``."""
    from gentool.metrics import compute_image_metrics, get_extractor

    opts = job.options  # GANEvaluateOptions
    g, cfg, num_classes, _ = load_generator(model, job.checkpoint, job.device)
    test = job.data
    if tuple(test.shape) != tuple(job.checkpoint.data["shape"]):
        raise GentoolError(f"the evaluation images are {tuple(test.shape)}, the model makes {tuple(job.checkpoint.data['shape'])}")
    train = job.split("train")
    conditional = model == "cgan"
    labels = torch.arange(job.n) % num_classes if conditional else None
    fake = generate(g, job.n, torch.Generator().manual_seed(job.seed), job.device, cfg.z_dim, labels)
    ext = get_extractor(job.features, train, device=job.device)
    image_metrics = compute_image_metrics(test.images, fake, ext)
    settings = {"sampler": "g_ema (EMA generator)", "features": image_metrics.pop("features")}
    result: dict[str, Any] = dict(image_metrics)
    if not conditional:
        return EvaluateResult(metrics=result, settings=settings)

    judge = label_judge(ext, train, job.device)
    if judge is None:
        raise GentoolError(f"cannot score class faithfulness: {train.name} has no labels to train a classifier on")
    settings["classifier"] = judge.name
    result.update(label_scores(judge, fake, labels, test))
    if opts.cas:
        if test.labels is None or train.labels is None:
            raise GentoolError("the Classification Accuracy Score needs labelled train and test data (or pass --cas false)")
        count = opts.cas_images if opts.cas_images is not None else min(len(train), CAS_MAX_IMAGES)
        if count < num_classes:
            raise GentoolError(f"--cas-images must be at least the number of classes ({num_classes}), got {count}")
        result.update(classification_accuracy_score(g, cfg.z_dim, num_classes, train, test, count, opts.cas_epochs,
                                                    job.seed, job.device))
    return EvaluateResult(metrics=result, settings=settings)
