"""The end-to-end experiment behind ``ddmini run``: classifier -> attack -> poisoned set -> diffusion
model -> samples -> evaluation -> report.

Every stage's output is cached under ``RUN_DIR/cache`` with a key derived from its config and the keys
(or file digests) of its inputs, so a second run with another poison fraction reuses the classifier
and the attacked set, and an interrupted run continues where it stopped: the attack resumes from its
finished chunks, training from its last checkpoint. Artefacts are written atomically; one that cannot
be read back is recomputed, never trusted. Reports go to ``RUN_DIR/p<p>/``.

Under torchrun (``ddmini.distributed``) rank 0 trains the classifier first (the others then find it
cached), the attack, the diffusion training and the sampling are shared out over the ranks, and rank 0
alone holds the locks, decides what is cached, evaluates and writes the report; ``run`` returns the
result on rank 0 and None on the others.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from . import __version__, checkpoint, classifier, data as ddata, distributed, metrics, samples as samples_io, train
from .attacks.stage import RESULT_NAME, AttackedSet, attack_dataset, attack_key, load_done_on_all
from .config import REFERENCE_IMAGES, RunConfig, key_dict, to_dict
from .diffusion import balanced_labels
from .evaluate import Evaluator, targeted_shares
from .poison import poisoned_set
from .result import RunResult


class Data(NamedTuple):
    """The run's images: training and test splits (limited as the config says) and their digest."""

    x: torch.Tensor
    y: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    key: str


class TrainedClassifier(NamedTuple):
    model: torch.nn.Module
    key: str  # the checkpoint's digest: the key of the stages that use it
    metrics: dict


class Attacked(NamedTuple):
    result: AttackedSet
    key: str


class DiffusionModel(NamedTuple):
    model: torch.nn.Module  # the EMA weights, eval mode
    train_cfg: object  # ddmini.config.DiffusionTrainConfig
    checkpoint: dict
    poisoned: object  # ddmini.poison.PoisonedSet it was trained on
    key: str


class Samples(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor
    seconds: float


@dataclass
class Stages:
    """What the run computed or found cached, for the report."""

    timings: dict = field(default_factory=dict)
    cached: dict = field(default_factory=dict)
    fit: object = None  # ddmini.fit.Fit when the steps were fitted
    artefacts: dict = field(default_factory=dict)  # stage -> path of its cached output


class Pipeline:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        data_dir=None,
        device="cpu",
        log: Callable[[str], None] = print,
        classifier_file=None,
    ):
        """``classifier_file``: the user's classifier (a ddmini checkpoint, a torch.export ``.pt2`` program or
        a TorchScript file) as the target, instead of the classifier stage's own."""
        self.classifier_file = classifier_file
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        self.cache = self.run_dir / "cache"
        self.data_dir = data_dir
        self.world = distributed.current()
        self.device = distributed.device_for(torch.device(device), self.world)
        self.log = log if self.world.is_main else (lambda msg: None)
        self.stages = Stages()
        self._data = None

    # ---- helpers ------------------------------------------------------------------------------
    def _stage(self, n: int, name: str, msg: str) -> None:
        self.log(f"[{n}/7] {name}: {msg}")

    def _try_load(self, path: Path, load):
        """load(path), or None when the file is missing, corrupt or made for another key: then one line says
        so and the file is set aside (PATH.rejected, kept for inspection) to be recomputed, never refused
        on every rerun."""
        if not path.exists():
            return None
        try:
            return load(path)
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:  # an edited file: any of these
            why = " ".join(str(e).split()).removeprefix(f"{path}: ")[:160]
            self.log(f"  {path.name}: {why}; set aside as {checkpoint.set_aside(path).name}, recomputing")
            return None

    # ---- 0. data --------------------------------------------------------------------------
    def data(self) -> Data:
        if self._data is None:
            x, y = ddata.load(self.data_dir, "train", self.cfg.dataset)
            xt, yt = ddata.load(self.data_dir, "test", self.cfg.dataset)
            if self.cfg.data_limit:
                x, y = x[: self.cfg.data_limit], y[: self.cfg.data_limit]
            if self.cfg.test_limit:
                xt, yt = xt[: self.cfg.test_limit], yt[: self.cfg.test_limit]
            h = hashlib.sha256()
            for t in (x, y, xt, yt):
                h.update(t.contiguous().numpy().tobytes())
            self._data = Data(x, y, xt, yt, h.hexdigest()[:16])
        return self._data

    # ---- 1. classifier ----------------------------------------------------------------------
    def classifier(self, cfg=None, extra=None, per_epoch: bool = False):
        """The classifier stage: the run's target (or the classifier ``cfg`` describes, e.g. a zoo
        member), trained on the run's data and cached by its config and the data's digest. ``extra``
        = (images, labels, key) joins the training images (e.g. a pool of deceptive samples), its key
        the stage's key; with ``per_epoch`` it is cut into ``cfg.epochs`` equal parts, one per epoch."""
        if cfg is None and self.classifier_file:
            return self._given_classifier()
        cfg = cfg or self.cfg.classifier
        x, y, xt, yt, dkey = self.data()
        key = self._classifier_key(cfg, extra, per_epoch)
        epoch_extra = (extra[0], extra[1]) if extra and per_epoch else None
        if extra and not per_epoch:
            x, y = torch.cat([x, extra[0].to(x.dtype)]), torch.cat([y, extra[1]])
        path = self.cache / f"classifier-{key}.pt"
        if cfg is self.cfg.classifier:
            self.stages.artefacts["classifier"] = str(path)
        with self.world.main_first(), checkpoint.exclusive(path.with_name(f".{path.name}.lock")):
            # a concurrent run (or rank other than 0) waits, then finds it cached
            got = self._try_load(path, lambda p: classifier.load(p, self.device, self.cfg.dataset, key=key))
            if got is not None:
                model, _, m = got
                self.stages.cached["classifier"] = True
                self._stage(1, "classifier", f"cached ({path.name}, test accuracy {100 * m['test_accuracy']:.2f}%)")
            else:
                t0 = time.perf_counter()
                k = self.cfg.unet.num_classes
                res = classifier.train(cfg, x, y, xt, yt, device=self.device, epoch_extra=epoch_extra, num_classes=k)
                classifier.save(
                    res.model,
                    cfg,
                    path,
                    self.cfg.dataset,
                    tuple(x.shape[1:]),
                    key=key,
                    test_accuracy=res.test_accuracy,
                    train_seconds=res.train_seconds,
                )
                model, m = res.model.eval(), {"test_accuracy": res.test_accuracy, "train_seconds": res.train_seconds}
                self.stages.timings["classifier"] = time.perf_counter() - t0
                self._stage(1, "classifier", f"trained, test accuracy {100 * res.test_accuracy:.2f}%")
        return TrainedClassifier(model, checkpoint.file_digest(path)[:16], m)

    def _classifier_key(self, cfg, extra=None, per_epoch: bool = False) -> str:
        return checkpoint.fingerprint(
            key_dict(cfg), self.data().key, *((extra[2],) if extra else ()), *(("per-epoch",) if per_epoch else ())
        )

    def _given_classifier(self) -> TrainedClassifier:
        """The user's classifier (``classifier_file``), keyed by its file's digest, with its test accuracy."""
        path, data = Path(self.classifier_file), self.data()
        k = self.cfg.unet.num_classes
        model = classifier.load_any(path, tuple(data.x.shape[1:]), k, self.device, self.cfg.dataset)
        acc = classifier.accuracy(model, data.xt, data.yt)
        self.stages.artefacts["classifier"] = str(path)
        self._stage(1, "classifier", f"given ({path.name}), test accuracy {100 * acc:.2f}%")
        return TrainedClassifier(model, checkpoint.file_digest(path)[:16], {"test_accuracy": acc})

    def save_classifier(self, out: Path) -> TrainedClassifier:
        """The classifier stage's model (trained or cached), also saved to ``out`` (``ddmini train-classifier``)."""
        got, x = self.classifier(), self.data().x
        m = got.metrics
        classifier.save(
            got.model,
            self.cfg.classifier,
            out,
            self.cfg.dataset,
            tuple(x.shape[1:]),
            test_accuracy=m["test_accuracy"],
            train_seconds=m.get("train_seconds"),
            train_images=len(x),
        )
        return got

    # ---- 2. attack ------------------------------------------------------------------------
    def attack_dir(self, key: str) -> Path:
        return self.cache / f"attack-{key}"

    def attacked(self, model, ckey: str, *, cfg=None, images=None, split: str = "train", out_dir=None) -> Attacked:
        """The attack stage: ``cfg`` (the run's attack config) on ``images`` (the run's training images),
        keyed by attack_key and cached in RUN_DIR/cache/attack-<key> (or ``out_dir``). `ddmini attack`
        calls this too, so what it makes, a run with the same settings finds cached."""
        cfg = cfg or self.cfg.attack
        x, y = images if images is not None else self.data()[:2]
        key = attack_key(cfg, ckey, int(x.shape[0]), split)
        out = Path(out_dir) if out_dir else self.attack_dir(key)
        done = out / RESULT_NAME
        self.stages.artefacts["attack"] = str(done)
        t0 = time.perf_counter()
        with checkpoint.exclusive(
            out.with_name(f".{out.name}.lock"), self.world
        ):  # a concurrent run waits, then finds it cached
            res = load_done_on_all(out, key, x.shape[0], self.world)  # read once (the MNIST set is ~190 MB)
            cached = res is not None
            if not cached and done.exists():
                self.log(f"  {out.name}/{done.name}: unreadable or made otherwise; recomputing")
            if not cached:
                res = attack_dataset(model, x, y, cfg, out, key=key, device=self.device, desc=f"attack {cfg.attack}")
        self.stages.cached["attack"] = cached
        if not cached:
            self.stages.timings["attack"] = time.perf_counter() - t0
        s = res.summary()
        self._stage(
            2,
            "attack",
            f"{'cached' if cached else 'done'}: {cfg.describe()}"
            f" succeeded on {100 * s['success_rate']:.2f}% of {s['images']} {split} images"
            f" (mean L2 {s['l2_mean']:.3f})",
        )
        return Attacked(res, key)

    # ---- 3a. the run's plan: each stage's expected time, and the steps that fit a budget here -----------
    def plan(self, start: float) -> dict:
        """Each stage's expected seconds here from now (0 for a stage found cached; ddmini.fit.Rates, timed
        once per run dir), logged as one line with the expected finish. With ``run_minutes`` training first
        gets what the run's budget, counted from ``start`` (a time.time()), leaves after the other stages
        (ddmini.fit.budget, decided once per run dir); with that or ``train.fit_minutes`` the fit stage sets
        ``train.steps`` (:meth:`fit`)."""
        from . import fit

        t0 = time.perf_counter()
        cfg, data = self.cfg, self.data()
        rates = fit.rates(cfg, self.device, self.cache, self.log)
        minutes = None
        if cfg.run_minutes > 0:
            cached, done = self._found_cached()
            others = fit.expected(fit.work(cfg, len(data.x), len(data.xt), cached, done), rates)
            others.pop("training")
            key = fit.rates_key(cfg, self.device, self.world.size)
            minutes = fit.budget(cfg.run_minutes, sum(others.values()), time.time() - start, key, self.cache)
        rec = self.fit(minutes)
        cached, done = self._found_cached()  # now that the steps, and so the model's key, are known
        w = fit.work(cfg, len(data.x), len(data.xt), cached, done)
        est = fit.expected(w, rates, rec.seconds_per_step if rec else None)
        self.stages.timings["plan"] = time.perf_counter() - t0
        self.log(fit.estimate_line(est, time.time(), cfg.run_minutes))
        return est

    def _found_cached(self) -> tuple[dict, int]:
        """The stages a run would find cached now, by their keys (classifier, attack, diffusion and
        samples_w<g>; a file found counts, the stage itself checks it), and the steps a diffusion checkpoint
        holds already."""
        cached, cfg = {}, self.cfg
        if self.classifier_file:
            path = Path(self.classifier_file)
        else:
            path = self.cache / f"classifier-{self._classifier_key(cfg.classifier)}.pt"
        if not path.is_file():
            return cached, 0
        cached["classifier"] = True
        akey = attack_key(cfg.attack, checkpoint.file_digest(path)[:16], len(self.data().x))
        if not (self.attack_dir(akey) / RESULT_NAME).is_file():
            return cached, 0
        cached["attack"] = True
        path = self.cache / f"diffusion-{self._diffusion_key(akey)}.pt"
        try:
            ckpt = train.load_checkpoint(path) if path.is_file() else None
        except ValueError:
            ckpt = None
        if ckpt is None or not ckpt.get("done") or ckpt["step"] < cfg.train.steps:
            return cached, int(ckpt["step"]) if ckpt else 0
        cached["diffusion"] = True
        dkey = checkpoint.file_digest(path)[:16]
        for g in cfg.guidance_scales:
            if (self.cache / f"samples-{self._samples_key(dkey, g, cfg.samples_at(g))}.pt").is_file():
                cached[f"samples_w{g:g}"] = True
        return cached, int(ckpt["step"])

    def fit(self, minutes: float | None = None):
        """With ``minutes`` (the run's budget's share for training) or ``train.fit_minutes``: the fit stage
        (ddmini.fit) sets ``train.steps`` to what fits those minutes on this machine (cached, so a repeated run
        trains the same steps); None otherwise."""
        t = self.cfg.train
        minutes = minutes or t.fit_minutes
        if minutes <= 0:
            return None
        from . import fit

        rec = fit.fitted(self.cfg.unet, replace(t, fit_minutes=minutes), self.device, self.cache)
        self.cfg.train = replace(t, steps=rec.steps, fused_norm=rec.fused_norm)
        norm = ""
        if rec.norm_seconds:
            norm = (
                f" with the {'fused' if rec.fused_norm else 'eager'} norm (fused {rec.norm_seconds['fused']:.3f}"
                f" vs eager {rec.norm_seconds['eager']:.3f} s/step)"
            )
        self._stage(
            4,
            "diffusion model",
            f"fitted to {rec.minutes:g} min here: {rec.seconds_per_step:.3f} s/step "
            f"over {rec.timed_steps} timed steps{norm} -> {rec.steps:,} steps ({rec.machine})",
        )
        if warning := rec.warning(t.batch_size):
            self._stage(4, "diffusion model", "warning: " + warning)
        self.stages.fit = rec
        return rec

    # ---- 3 + 4. poisoned set and diffusion model ------------------------------------------------
    def diffusion(self, adv: AttackedSet, akey: str, deadline: train.Deadline | None = None) -> DiffusionModel:
        """The poisoned set and the diffusion model trained on it (cached by its key; an unfinished checkpoint
        is resumed). At ``deadline`` training stops unfinished (:class:`ddmini.train.Deadline`)."""
        x, y, _, _, dkey = self.data()
        cfg = self.cfg
        ps = poisoned_set((x, y), adv, cfg.poison, seed=cfg.train.seed, only_successful=cfg.only_successful)
        self._stage(
            3,
            "poisoned set",
            f"{len(ps)} images, {int(ps.attacked.sum())} attacked "
            f"(p = {cfg.poison:g}{', successful attacks only' if cfg.only_successful else ''})",
        )
        key = self._diffusion_key(akey)
        path = self.cache / f"diffusion-{key}.pt"
        self.stages.artefacts["diffusion"] = str(path)
        # A second run wanting the same model waits here, then finds it cached instead of training it too.
        with checkpoint.exclusive(path.with_name(f".{path.name}.lock"), self.world):
            prev = self._try_load(path, lambda p: train.load_checkpoint(p, key)) if self.world.is_main else None
            finished = prev is not None and prev.get("done") and int(prev["step"]) >= cfg.train.steps
            if self.world.broadcast_object(bool(finished)):  # rank 0 decides for every rank
                self.stages.cached["diffusion"] = True
                if prev is not None:  # rank 0's log
                    self._stage(4, "diffusion model", f"cached ({path.name}, {prev['step']} steps)")
            else:
                start = int(prev["step"]) if prev else 0
                self._stage(
                    4,
                    "diffusion model",
                    f"training {cfg.train.steps} steps" + (f", resuming at step {start}" if start else ""),
                )
                t0 = time.perf_counter()
                train.train(
                    cfg.unet,
                    cfg.train,
                    ps.x,
                    ps.y,
                    path,
                    device=self.device,
                    resume=True,
                    extra={"poison": cfg.poison, "dataset": cfg.dataset, "key": key},
                    deadline=deadline,
                )
                self.stages.timings["training"] = time.perf_counter() - t0
            model, tcfg, ckpt = train.load_ema(path, self.device)
        return DiffusionModel(model, tcfg, ckpt, ps, checkpoint.file_digest(path)[:16])

    def _diffusion_key(self, akey: str) -> str:
        cfg = self.cfg
        inputs = self.data().key if cfg.poison == 0 and not cfg.only_successful else akey
        # a fitted run's model is keyed by the steps it trains, as if they had been given (fit_minutes left out)
        tkey = key_dict(replace(cfg.train, fit_minutes=0.0))
        return checkpoint.fingerprint(key_dict(cfg.unet), tkey, inputs, cfg.poison, cfg.only_successful)

    # ---- 5. samples ---------------------------------------------------------------------------
    def samples(
        self, model, tcfg, dkey: str, guidance: float, num: int | None = None, seed: int | None = None
    ) -> Samples | None:
        """The sampling stage at one guidance scale (``num`` images, the run's by default, with sampling
        seed ``seed``): (images, labels, seconds) on rank 0, None elsewhere."""
        s = self._sample_config(guidance, seed)
        num = self.cfg.num_samples if num is None else num
        key = self._samples_key(dkey, guidance, num, seed)
        path = self.cache / f"samples-{key}.pt"
        labels = balanced_labels(num, model.cfg.num_classes)

        def load(p):
            got = samples_io.load(p, model.cfg.num_classes, key)
            if not torch.equal(got["labels"], labels):
                raise ValueError(f"{p}: its labels are not the {num} balanced labels it was made with")
            return got

        got = self._try_load(path, load) if self.world.is_main else None
        if self.world.broadcast_object(got is not None):
            if not self.world.is_main:
                return None
            self.stages.cached[f"samples_w{guidance:g}"] = True
            return Samples(got["images"], got["labels"], float(got.get("seconds", float("nan"))))
        x, secs = samples_io.generate(model, tcfg, labels, s, device=self.device, desc=f"sample w={guidance:g}")
        if not self.world.is_main:
            return None
        samples_io.save(path, x, labels, model.cfg.num_classes, seconds=secs, key=key)
        return Samples(x, labels, secs)

    def _sample_config(self, guidance: float, seed: int | None = None):
        """The run's sampling config at ``guidance`` (with sampling seed ``seed`` where given): the scale sampled;
        which one a report headlines is no part of it."""
        return replace(self.cfg.sample, guidance=guidance, **({} if seed is None else {"seed": seed}))

    def _samples_key(self, dkey: str, guidance: float, num: int, seed: int | None = None) -> str:
        return checkpoint.fingerprint(key_dict(self._sample_config(guidance, seed)), guidance, num, dkey)

    # ---- the whole run ----------------------------------------------------------------------------
    def _close_timings(self, t_eval: float, t_start: float) -> None:
        """The evaluation's seconds (from the evaluator's start, sampling left out) and the run's in all, taken
        just before the report is written."""
        now, t = time.perf_counter(), self.stages.timings
        t["evaluation"] = now - t_eval - t.get("sampling", 0.0)
        t["total"] = now - t_start

    def check_folder(self, overwrite: bool = False) -> Path:
        """The run's report folder, if it is free for this run: empty, or holding a run of the same settings
        (its config.json), or ``overwrite``. A run of other settings there is refused with one line naming the
        first setting that differs, on every rank. A setting the folder's config.json does not hold (a knob added
        since) counts as its default there."""
        where, err = self.run_dir / self.cfg.folder(), None
        old = where / "config.json"
        if self.world.is_main and old.is_file() and not overwrite:
            try:
                was = distributed.flatten(json.loads(old.read_text()))
            except (OSError, ValueError):
                was = {"config.json": "unreadable"}

            def as_saved(cfg):  # as config.json holds it
                return distributed.flatten(json.loads(json.dumps(to_dict(cfg))))

            now, default = as_saved(self.cfg), as_saved(RunConfig())
            was = {**{k: v for k, v in default.items() if k not in was}, **was}
            diff = next((k for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)), None)
            if diff is not None:
                err = (f"{where} holds a run with other settings ({diff} {was.get(diff)!r} there, {now.get(diff)!r} "
                       "now); pass --overwrite to replace it, or choose another --run-dir")  # fmt: skip
        self.world.agree(err)
        return where

    def run(self, overwrite: bool = False, png_dir=None) -> RunResult | None:
        """The whole run; its result on rank 0 (None on the other ranks under torchrun). Its report folder
        must be free (:meth:`check_folder`); config.json is written with the report, once the run is done.
        With ``png_dir``, the headline guidance's samples are also written there as an image folder."""
        from . import report

        main = self.world.is_main
        t_start, wall_start = time.perf_counter(), time.time()
        est = self.plan(wall_start)  # before the folder check: config.json records the steps trained
        cfg, where = self.cfg, self.check_folder(overwrite)
        clf, ckey, cmetrics = self.classifier()
        adv, akey = self.attacked(clf, ckey)
        deadline = None
        if cfg.run_minutes > 0:  # what sampling and evaluation need is kept back from training
            at = wall_start + 60 * cfg.run_minutes - est["sampling"] - est["evaluation"]
            deadline = train.Deadline(at, self.log)
        model, tcfg, ckpt, ps, dkey = self.diffusion(adv, akey, deadline)
        _, _, xt, yt, _ = self.data()
        t_eval = time.perf_counter()
        ev = Evaluator(clf, xt, yt, adv, self.cfg.test_limit or REFERENCE_IMAGES) if main else None
        spent_sampling, results = 0.0, {}
        for g in cfg.guidance_scales:
            t_sample = time.perf_counter()
            got = self.samples(model, tcfg, dkey, g, num=cfg.samples_at(g))
            spent_sampling += time.perf_counter() - t_sample
            if not main:
                continue  # rank 0 evaluates
            x, labels, secs = got
            r = ev.generated(x, labels, f"{g:g}")
            r.set_timing(secs)
            results[f"{g:g}"] = r
            self._stage(
                5,
                "samples",
                f"guidance {g:g}: {len(labels)} images in {secs:.0f} s, "
                f"misclassified {100 * r.misclassification.rate:.2f}%",
            )
        zoo = None
        if cfg.zoo:  # every rank: the zoo's stages take part in collectives; rank 0 scores
            from .transfer import zoo_matrix

            gen = {f"generated (w={g})": (ev.samples[g][0], ev.samples[g][1]) for g in results} if main else {}
            zoo = zoo_matrix(self, clf, ckey, gen)
        if not main:
            return None
        if zoo is not None:
            self._stage(6, "evaluation", f"transfer to the zoo: {', '.join(zoo.classifiers[1:])}")
        self._stage(6, "evaluation", "done")
        att = adv.summary()
        out = RunResult(
            poison=cfg.poison,
            config=to_dict(cfg),
            versions={
                "ddmini": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "device": str(self.device),
                "processes": self.world.size,
            },
            classifier={"test_accuracy": cmetrics.get("test_accuracy")},
            attack={
                **att,
                **({"target": cfg.attack.target} if cfg.attack.target else {}),
                "per_class_success": metrics.misclassification(adv.y, adv.pred, clf.num_classes)["per_class"],
                "margin": adv.margin(clf, self.data()[0], limit=self.cfg.test_limit or REFERENCE_IMAGES),
            },
            clean_test=ev.clean_test,
            training_set={
                "images": len(ps),
                "attacked": int(ps.attacked.sum()),
                "diffusion_steps": int(ckpt["step"]),
                "diffusion_train_seconds": float(ckpt["seconds"]),
                "planned_steps": int(cfg.train.steps),
                "stopped_at_deadline": bool(deadline is not None and deadline.hit),
                **(
                    {"fit": asdict(self.stages.fit), "fit_warning": self.stages.fit.warning(self.cfg.train.batch_size)}
                    if self.stages.fit
                    else {}
                ),
            },
            generated=results,
            headline_guidance=cfg.sample.guidance,
            cost={
                "attack_seconds_per_adversarial_example": att["seconds"] / max(att["successful"], 1),
                "sampling_seconds_per_misleading_image": {
                    k: v.seconds_per_misleading_image for k, v in results.items()
                },
                "diffusion_training_seconds": float(ckpt["seconds"]),
            },
            timings=self.stages.timings,
            estimates=est,
            targeted=targeted_shares(ev.samples, cfg.attack, clf.num_classes),
            cached=self.stages.cached,
            artefacts=self.stages.artefacts,
            class_names=list(ddata.get(cfg.dataset).class_names),
            transfer=None
            if zoo is None
            else {
                "sources": zoo.sources,
                "classifiers": zoo.classifiers,
                "misclassified": zoo.rates,
                "images": zoo.images,
            },
        )
        self.stages.timings["sampling"] = spent_sampling
        where.mkdir(parents=True, exist_ok=True)
        report.write_json(to_dict(cfg), where / "config.json")
        self._close_timings(t_eval, t_start)  # the report's pictures, a second or two, are left out
        report.write(out, where, ev, adv, self.data()[0])
        if png_dir:
            x, labels, pred = ev.samples[f"{cfg.sample.guidance:g}"]
            samples_io.write_folder(x, labels, png_dir, out.class_names, pred=pred)
        self._stage(7, "report", f"{where}/report.md, report.json and PNGs")
        return out


def open_stage(
    preset: str | None = None,
    *,
    dataset: str = "mnist",
    seed: int = 0,
    run_dir="runs",
    data_dir=None,
    device="auto",
    overrides: dict | None = None,
    settings: dict | None = None,
    time_default: bool = False,
    log: Callable[[str], None] | None = None,
    classifier_file=None,
) -> Pipeline:
    """The set-up every stage command shares: preset ``preset`` (or the default, timed in ``run_dir`` with
    ``time_default``) for ``dataset`` with ``seed`` and ``overrides`` (ddmini.config.apply_overrides), on
    ``device``, caching in ``run_dir`` (created if missing). With ``settings`` (a command that runs under
    torchrun), every rank joins the process group and must have been given the same config and settings.
    ``pipe.preset`` and ``pipe.why`` name the preset used and why it was the default; ``classifier_file``:
    the user's classifier as the target (:class:`Pipeline`)."""
    from .checkpoint import writable_dir
    from .presets import run_config
    from .runtime import progress_seconds, resolve_device

    progress_seconds()  # a bad value is one line now, not at the first progress bar minutes into the work
    dev = resolve_device(device)
    timed = run_dir if time_default else None
    chosen = run_config(
        preset, seed=seed, device=dev, dataset=dataset, overrides=overrides, run_dir=timed, data_dir=data_dir
    )
    if settings is not None:
        given = {"run": to_dict(chosen.config), "data_dir": data_dir, "classifier": classifier_file}
        _, dev = distributed.join(dev, {**given, **settings}, [run_dir])
    pipe = Pipeline(chosen.config, writable_dir(run_dir), data_dir, dev, log or (lambda m: None), classifier_file)
    pipe.preset, pipe.why = chosen.name, chosen.why
    return pipe
