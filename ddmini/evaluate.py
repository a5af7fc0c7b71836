"""Evaluation of generated images: how often the target classifier is fooled (overall, per class,
confusion) and the class-aware Fréchet distance to the clean test set and to the attacked set."""

from __future__ import annotations

import torch

from . import classifier, metrics, samples as samples_io
from .attacks.stage import AttackedSet
from .config import REFERENCE_IMAGES
from .result import Cafd, GeneratedResult, Misclassification


class Evaluator:
    """Classifier predictions and features of the reference sets, computed once per run."""

    def __init__(self, clf, xt, yt, adv: AttackedSet | None, ref_limit: int = REFERENCE_IMAGES):
        self.clf = clf
        logits, self.test_feats = classifier.predict(clf, xt, features=True)
        self.test_probs = logits.softmax(1)
        self.yt = yt
        self.clean_test = Misclassification(**metrics.misclassification(yt, logits.argmax(1), clf.num_classes))
        self.adv_feats = None
        if adv is not None:
            n = min(ref_limit, len(adv))
            alog, self.adv_feats = classifier.predict(clf, adv.x_adv[:n], features=True)
            self.adv_probs, self.adv_y = alog.softmax(1), adv.y[:n]
        self.samples: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def generated(self, x: torch.Tensor, labels: torch.Tensor, name: str) -> GeneratedResult:
        """Misclassification and CAFD of generated images x (finite, in [0, 1]) with conditioning labels."""
        samples_io.check_images(x, f"generated images ({name})")
        samples_io.check_labels(labels, x.shape[0], self.clf.num_classes, f"labels of the generated images ({name})")
        logits, feats = classifier.predict(self.clf, x, features=True)
        probs, pred = logits.softmax(1), logits.argmax(1)
        self.samples[name] = (x, labels, pred)
        cafd = {}
        refs = [("clean_test", self.test_feats, self.test_probs, self.yt)]
        if self.adv_feats is not None:
            refs.append(("attacked", self.adv_feats, self.adv_probs, self.adv_y))
        for ref, rf, rp, ry in refs:
            for mode in ("soft", "hard"):
                wa, wb = (probs, rp) if mode == "soft" else (labels, ry)
                try:
                    mean, per = metrics.class_aware_frechet_distance(feats, wa, rf, wb)
                    cafd[f"{ref}_{mode}"] = Cafd(float(mean), per.tolist())
                except ValueError as e:  # a class with no samples at all (tiny runs)
                    cafd[f"{ref}_{mode}"] = Cafd(float("nan"), error=str(e))
        k = self.clf.num_classes
        return GeneratedResult(Misclassification(**metrics.misclassification(labels, pred, k)), cafd, probs.shape[1])


def evaluate_files(samples_path, classifier_path, *, data_dir=None, dataset: str = "mnist", attacked=None):
    """``ddmini evaluate``: the samples file ``samples_path`` scored by the classifier checkpoint
    ``classifier_path`` against ``dataset``'s test set (and the attacked set in ``attacked`` for CAFD):
    (GeneratedResult, the Evaluator, which holds the clean test figures)."""
    from . import data

    xt, yt = data.load(data_dir, "test", dataset)
    clf = classifier.load_any(classifier_path, tuple(xt.shape[1:]), data.get(dataset).num_classes, dataset=dataset)
    s = samples_io.load(samples_path, clf.num_classes)
    ev = Evaluator(clf, xt, yt, AttackedSet.load(attacked) if attacked else None)
    return ev.generated(s["images"], s["labels"], "samples"), ev


def targeted_shares(samples: dict, cfg, num_classes: int) -> dict | None:
    """A targeted attack's figures on the generated images: per guidance scale, the share classified as the
    target of their conditioning class (shift: y + 1 mod C; K: K) overall and per class. ``samples``: the
    Evaluator's (images, labels, predictions) by scale. Samples conditioned on the target class K itself are
    left out (their class is their target). None for an untargeted attack; for random targets, which are
    drawn per training image, a generated image has no target of its own: the mode alone is recorded."""
    from .attacks.stage import targets

    if not cfg.target:
        return None
    out = {"mode": cfg.target, "by_guidance": {}}
    if cfg.target == "random":
        out["note"] = "random targets are drawn per training image; a generated image has none of its own"
        return out
    for g, (_, labels, pred) in samples.items():
        t = targets(cfg, labels, num_classes)
        keep = t != labels
        hit = (pred == t) & keep
        per = []
        for k in range(num_classes):
            m = keep & (labels == k)
            per.append(float(hit[m].sum()) / int(m.sum()) if bool(m.any()) else None)
        n = int(keep.sum())
        out["by_guidance"][g] = {"rate": float(hit.sum()) / n if n else None, "n": n, "per_class": per}
    return out
