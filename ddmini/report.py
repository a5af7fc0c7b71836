"""Reports of a run and of a sweep: report.json (everything), report.md (a summary table) and PNGs
(generated images per class with the classifier's verdict, clean vs attacked vs generated, the
confusion matrix, and the sweep plot). Pictures are drawn with Pillow; no plotting library needed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import images
from .checkpoint import atomic_open
from .config import AttackConfig, from_dict
from .result import RunResult, Transfer

W_COLOR = {True: images.RED, False: images.GREEN}


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _num(v, fmt=".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))) else format(v, fmt)


def _strict(obj):
    """NaN and infinities as null: strict JSON readers (jq, browsers, other languages) reject them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(obj, path: Path) -> None:
    with atomic_open(path, "w") as f:
        json.dump(_strict(obj), f, indent=1, default=str, allow_nan=False)


def write_text(text: str, path: Path) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def summary_lines(r: RunResult) -> list[str]:
    """The one-screen summary (also the top of report.md)."""
    hg, g = r.headline()
    lines = [
        f"poison p = {r.poison:g}: diffusion model trained on {r.training_set['images']} images, "
        f"{r.training_set['attacked']} of them attacked",
        f"classifier test accuracy {_pct(r.classifier['test_accuracy'])}; "
        f"attack success on the training set {_pct(r.attack['success_rate'])}",
        f"generated images misclassified (guidance {hg}): {_pct(g.misclassification.rate)} "
        f"of {g.misclassification.n}; clean test images: {_pct(r.clean_test.rate)}",
        f"CAFD (soft) generated vs clean test: {_num(g.cafd['clean_test_soft'].mean)}, "
        f"vs attacked set: {_num(g.cafd['attacked_soft'].mean)}",
    ]
    return lines


def class_names(r: RunResult) -> list[str]:
    """The run's dataset's class names ("0".."9" for MNIST)."""
    from .data import get

    names = list(r.class_names or get(r.config.get("dataset", "mnist")).class_names)
    return names + [str(k) for k in range(len(names), len(r.clean_test.per_class))]


def targeted_lines(r: RunResult) -> list[str]:
    """report.md's section on a targeted attack: the share of samples classified as their class's target."""
    t = r.targeted
    if not t:
        return []
    out = ["", f"## Targeted ({t['mode']})", ""]
    if not t.get("by_guidance"):
        return out + [f"- {t.get('note', '')}"]
    names = class_names(r)
    out += ["| guidance | in their target class | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for g, v in t["by_guidance"].items():
        cells = " | ".join("" if c is None else _pct(c) for c in v["per_class"])
        out.append(f"| {g} | {rate_with_se(v['rate'], v['n'])} | {cells} |")
    return out


def time_table(r: RunResult) -> list[str]:
    """Each stage's minutes, expected when the run started beside measured (blank: cached, or not counted)."""
    est, got = r.estimates or {}, r.timings
    rows = ["| stage | expected min | actual min |", "|---|---|---|"]
    for k in [*est, *(k for k in got if k not in est)]:
        cells = [f"{v / 60:.1f}" if isinstance(v := d.get(k), (int, float)) else "" for d in (est, got)]
        rows.append(f"| {k} | {cells[0]} | {cells[1]} |")
    if est:
        rows.append(f"| expected in all | {sum(est.values()) / 60:.1f} | |")
    ts = r.training_set
    if ts.get("stopped_at_deadline"):
        rows += ["", f"Training stopped at the run's deadline after {ts['diffusion_steps']:,} of "
                     f"{ts['planned_steps']:,} steps; a later run resumes it."]  # fmt: skip
    return rows


def markdown(r: RunResult) -> str:
    fit = r.training_set.get("fit")
    fitted = (
        [
            f"- training fitted to {fit['minutes']:g} min on this machine ({fit['machine']}): "
            f"{fit['seconds_per_step']:.3f} s per step over {fit['timed_steps']} timed steps"
            + (
                f" with the {'fused' if fit['fused_norm'] else 'eager'} GroupNorm + SiLU (fused "
                f"{fit['norm_seconds']['fused']:.3f} vs eager {fit['norm_seconds']['eager']:.3f} s per step)"
                if fit.get("norm_seconds")
                else ""
            )
            + f" -> {fit['steps']:,} steps"
            + (f". Warning: {r.training_set['fit_warning']}" if r.training_set.get("fit_warning") else "")
        ]
        if fit
        else []
    )
    out = [
        f"# ddmini run report ({r.config.get('dataset', 'mnist')})",
        "",
        *[f"- {line}" for line in summary_lines(r)],
        *fitted,
        "",
        "## Generated images by guidance scale",
        "",
        "| guidance | misclassified | CAFD soft vs test | CAFD hard vs test | CAFD soft vs attacked "
        "| CAFD hard vs attacked | s / image | s / misleading image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g, v in r.generated.items():
        c = v.cafd
        out.append(
            f"| {g} | {_pct(v.misclassification.rate)} | {_num(c['clean_test_soft'].mean)} "
            f"| {_num(c['clean_test_hard'].mean)} | {_num(c['attacked_soft'].mean)} "
            f"| {_num(c['attacked_hard'].mean)} | {_num(v.seconds_per_image, '.4f')} "
            f"| {_num(v.seconds_per_misleading_image, '.4f')} |"
        )
    out += targeted_lines(r)
    out += [
        "",
        "## Misclassification per class",
        "",
        "| class | attacked training set | clean test | "
        + " | ".join(f"generated (w={g})" for g in r.generated)
        + " |",
        "|---" * (3 + len(r.generated)) + "|",
    ]
    names = class_names(r)
    for k in range(len(r.clean_test.per_class)):
        row = [_pct(r.attack["per_class_success"][k]), _pct(r.clean_test.per_class[k])]
        row += [_pct(v.misclassification.per_class[k]) for v in r.generated.values()]
        out.append(f"| {names[k]} | " + " | ".join(row) + " |")
    m = r.attack.get("margin")
    if m and m["images"]:
        out += [
            "",
            "## How much of the perturbation misleads",
            "",
            f"Share of the successfully attacked training images (the first {m['images']}) that the classifier still "
            "gets wrong when only s times their perturbation is applied: how much of a perturbation a generated "
            "image has to carry to mislead. A model that reproduced 80 % of each would mislead about as often "
            "as the s = 0.8 column says.",
            "",
            "| s | " + " | ".join(f"{s:g}" for s in m["scales"]) + " |",
            "|---" * (len(m["scales"]) + 1) + "|",
            "| still misclassified | " + " | ".join(_pct(v) for v in m["still_misclassified"]) + " |",
        ]
        if m.get("in_target"):
            out.append("| still in their target class | " + " | ".join(_pct(v) for v in m["in_target"]) + " |")
    if r.transfer:
        t = Transfer(
            r.transfer["sources"], r.transfer["classifiers"], r.transfer["misclassified"], r.transfer["images"]
        )
        out += [
            "",
            "## Transfer to the classifier zoo",
            "",
            "Share of each source's images that each classifier gets wrong (generated images: against their "
            "conditioning label; attacked images: against their true label). The zoo (`ddmini zoo`): the "
            "target's architecture with two other seeds, an MLP, a residual CNN and the target adversarially "
            "trained with PGD-L2. Picture: `transfer.png`.",
            "",
            t.markdown(),
        ]
    c = r.cost
    out += [
        "",
        "## Cost",
        "",
        f"- attack: {_num(c['attack_seconds_per_adversarial_example'], '.4f')} s per successful adversarial example",
        *[
            f"- deceptive sampling (w={g}): {_num(v, '.4f')} s per misclassified generated image"
            for g, v in c["sampling_seconds_per_misleading_image"].items()
        ],
        f"- plus a one-off {c['diffusion_training_seconds']:.0f} s of diffusion training",
        "",
        "## Time",
        "",
        *time_table(r),
        "",
        "Pictures: `samples.png` (rows = conditioning class; red frame = classifier disagrees), "
        "`comparison.png` (clean / attacked / generated), `confusion.png`.",
        "",
    ]
    return "\n".join(out)


def column_lines(name: str, width: int) -> list[str]:
    """A column's name in lines of at most ``width`` characters, broken after a '/', '-' or space where one
    falls in the line, else cut at the width (nothing left out: "T-shirt/top" over two 10-character columns
    reads "T-shirt/" and "top")."""
    lines = []
    while len(name) > width:
        cut = max((i + 1 for i, ch in enumerate(name[:width]) if ch in "/- "), default=width)
        lines.append(name[:cut].rstrip())
        name = name[cut:].lstrip()
    if name or not lines:  # the rest, or the empty name's one empty line
        lines.append(name)
    return lines


def annotated_grid(x: torch.Tensor, path: Path, nrow: int, frames, title: str, row_names=(), col_names=()) -> None:
    """images.grid with a title line, a name left of each row and above each column (a picture that reads
    on its own: which dataset, p and guidance; which class; which kind of image)."""
    img = images.grid(x, nrow=nrow, frames=frames)
    rows = max(1, (x.shape[0] + nrow - 1) // nrow)
    cw, ch = img.width // nrow, img.height // rows
    left = 8 + 6 * max((len(r) for r in row_names), default=0)
    heads = [column_lines(c, max(1, cw // 6)) for c in col_names]
    top = 18 + 12 * max((len(h) for h in heads), default=0) + (2 if heads else 0)
    out = Image.new("RGB", (img.width + left, img.height + top), "white")
    out.paste(img, (left, top))
    d = ImageDraw.Draw(out)
    d.text((4, 3), title, fill="black")
    for j, lines in enumerate(heads):
        for k, line in enumerate(lines):
            d.text((left + j * cw + 2, top - 13 - 12 * (len(lines) - 1 - k)), line, fill="black")
    for i, r in enumerate(row_names):
        d.text((4, top + i * ch + ch // 2 - 5), r, fill="black")
    images.save_png(out, path)


def samples_png(
    x, labels, pred, path: Path, per_class: int = 10, num_classes: int = 10, title: str = "", class_names=()
) -> None:
    """Rows = conditioning class, up to ``per_class`` images each; red frame where the classifier
    disagrees with the conditioning label, green where it agrees."""
    rows, frames = [], []
    for k in range(num_classes):
        idx = (labels == k).nonzero().flatten()[:per_class]
        for i in range(per_class):
            if i < len(idx):
                rows.append(x[idx[i]])
                frames.append(W_COLOR[bool(pred[idx[i]] != k)])
            else:
                rows.append(torch.ones_like(x[0]))
                frames.append(None)
    annotated_grid(torch.stack(rows), path, per_class, frames, title, list(class_names)[:num_classes])


def confusion_png(cm: list[list[int]], path: Path, cell: int = 34, names=(), title: str = "") -> None:
    """Counts of (label, prediction); rows named by class, columns by index (and the key below the title)."""
    k = len(cm)
    names = list(names) + [str(i) for i in range(len(names), k)]
    m = max(max(r) for r in cm) or 1
    left, top = 14 + 6 * max(len(n) for n in names), 40
    img = Image.new("RGB", (left + k * cell + 10, top + k * cell + 10), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 4), f"{title + ': ' if title else ''}rows: label, cols: prediction", fill="black")
    for i in range(k):
        d.text((4, top + i * cell + cell // 2 - 5), f"{names[i]} {i}" if names[i] != str(i) else names[i], fill="black")
        d.text((left + i * cell + cell // 2 - 3, top - 14), str(i), fill="black")
        for j in range(k):
            v = cm[i][j] / m
            shade = int(255 * (1 - v))
            color = (255, shade, shade) if i != j else (shade, 255, shade)
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline=(200, 200, 200))
            d.text((x0 + 3, y0 + cell // 2 - 5), str(cm[i][j]), fill="black")
    images.save_png(img, path)


def matrix_png(rows: list[str], cols: list[str], values: list[list[float]], path: Path, cell: int = 70) -> None:
    """A heat map of shares in [0, 1] (white 0, red 1), with row and column names and each value in %."""
    left, top = 8 + 7 * max(len(r) for r in rows), 16 + 7 * max(len(c) for c in cols) // 2
    img = Image.new("RGB", (left + cell * len(cols) + 10, top + cell // 2 * len(rows) + 10), "white")
    d = ImageDraw.Draw(img)
    h = cell // 2
    for j, c in enumerate(cols):  # names in two lines where long, above their column
        words = c.split(" ")
        line1 = " ".join(words[: max(1, len(words) // 2)])
        d.text((left + j * cell + 2, top - 30), line1, fill="black")
        d.text((left + j * cell + 2, top - 16), " ".join(words[max(1, len(words) // 2) :]), fill="black")
    for i, r in enumerate(rows):
        d.text((4, top + i * h + h // 2 - 5), r, fill="black")
        for j, v in enumerate(values[i]):
            shade = int(255 * (1 - min(max(v, 0.0), 1.0)))
            x0, y0 = left + j * cell, top + i * h
            d.rectangle([x0, y0, x0 + cell - 1, y0 + h - 1], fill=(255, shade, shade), outline=(200, 200, 200))
            d.text((x0 + 6, y0 + h // 2 - 5), f"{100 * v:.1f}%", fill="black")
    images.save_png(img, path)


def write(r: RunResult, where: Path, ev, adv, x_clean: torch.Tensor) -> None:
    where.mkdir(parents=True, exist_ok=True)
    write_json(r.to_dict(), where / "report.json")
    write_text(markdown(r), where / "report.md")
    name, g = r.headline()
    x, lab, pred = ev.samples[name]
    names = class_names(r)
    title = f"{r.config.get('dataset', 'mnist')}, p = {r.poison:g}, guidance {name}"
    samples_png(
        x,
        lab,
        pred,
        where / "samples.png",
        num_classes=len(names),
        class_names=names,
        title=f"{title}: generated, rows = conditioning class, red = classifier disagrees",
    )
    confusion_png(g.misclassification.confusion, where / "confusion.png", names=names, title=title)
    if r.transfer:
        matrix_png(
            r.transfer["sources"], r.transfer["classifiers"], r.transfer["misclassified"], where / "transfer.png"
        )
    # clean / attacked / generated, one column per class
    cols, frames, shown = [[], [], []], [[], [], []], []
    for k in range(len(r.clean_test.per_class)):
        members = (adv.y == k).nonzero().flatten()
        gen = (lab == k).nonzero().flatten()
        if not len(members) or not len(gen):
            continue
        i = int(members[0])
        cols[0].append(x_clean[i])
        frames[0].append(None)
        cols[1].append(adv.x_adv[i])
        frames[1].append(W_COLOR[bool(adv.success[i])])
        cols[2].append(x[gen[0]])
        frames[2].append(W_COLOR[bool(pred[gen[0]] != k)])
        shown.append(names[k])
    if cols[0]:
        n = len(cols[0])
        annotated_grid(
            torch.stack(cols[0] + cols[1] + cols[2]),
            where / "comparison.png",
            n,
            frames[0] + frames[1] + frames[2],
            f"{title}: red = misclassified",
            ["clean", "attacked", "generated"],
            shown,
        )


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------
def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line y = slope x + intercept and its R^2."""
    n = len(xs)
    if n < 2:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan")}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((a - mx) ** 2 for a in xs)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    slope = sxy / sxx if sxx else float("nan")
    intercept = my - slope * mx
    ss_tot = sum((b - my) ** 2 for b in ys)
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot if ss_tot else float("nan")}


def plot_png(panels: list[dict], path: Path, size=(420, 320)) -> None:
    """Side-by-side scatter plots with a fitted line: panels = [{title, xs, ys, fit, ylabel}]."""
    w, h = size
    img = Image.new("RGB", (w * len(panels), h), "white")
    d = ImageDraw.Draw(img)
    for pi, p in enumerate(panels):
        ox, left, top, right, bottom = pi * w, 55, 30, 15, 40
        x0, y0, x1, y1 = ox + left, top, ox + w - right, h - bottom
        ys = [v for v in p["ys"] if not math.isnan(v)] or [0.0]
        lo, hi = min(0.0, min(ys)), max(ys) * 1.1 or 1.0
        xm = max(p["xs"]) or 1.0

        def px(a, b, box=(x0, y0, x1, y1), xm=xm, lo=lo, hi=hi):  # this panel's box and ranges, bound now
            return box[0] + (box[2] - box[0]) * a / xm, box[3] - (box[3] - box[1]) * (b - lo) / (hi - lo)

        d.rectangle([x0, y0, x1, y1], outline="black")
        d.text((x0, 8), p["title"], fill="black")
        for t in range(5):
            v = lo + (hi - lo) * t / 4
            _, yy = px(0, v)
            d.line([x0 - 4, yy, x0, yy], fill="black")
            d.text((ox + 4, yy - 5), f"{v:.3g}", fill="black")
        for a in p["xs"]:
            xx, _ = px(a, lo)
            d.line([xx, y1, xx, y1 + 4], fill="black")
            d.text((xx - 8, y1 + 8), f"{a:g}", fill="black")
        d.text(((x0 + x1) / 2 - 30, h - 16), "poison fraction p", fill="black")
        f = p["fit"]
        if not math.isnan(f["slope"]):
            d.line([px(0, f["intercept"]), px(xm, f["intercept"] + f["slope"] * xm)], fill=(40, 90, 200), width=2)
            d.text((x0 + 6, y0 + 6), f"slope {f['slope']:.3g}  R2 {f['r2']:.3f}", fill=(40, 90, 200))
        for a, b in zip(p["xs"], p["ys"]):
            if not math.isnan(b):
                cx, cy = px(a, b)
                d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=images.RED)
    images.save_png(img, path)


def write_sweep(rows: list[RunResult], where: Path, guidance: str) -> dict:
    where.mkdir(parents=True, exist_ok=True)
    ps = [r.poison for r in rows]
    mis = [r.generated[guidance].misclassification.rate for r in rows]
    cafd = [r.generated[guidance].cafd["clean_test_soft"].mean for r in rows]
    fits = {"misclassification": linear_fit(ps, mis), "cafd_clean_test_soft": linear_fit(ps, cafd)}
    table = ["| p | misclassified | CAFD soft vs clean test | attacked images in training set |", "|---|---|---|---|"]
    for r, m, c in zip(rows, mis, cafd):
        table.append(f"| {r.poison:g} | {_pct(m)} | {_num(c)} | {r.training_set['attacked']} |")
    fm, fc = fits["misclassification"], fits["cafd_clean_test_soft"]
    # the same fit at every guidance scale the runs sampled (guidance pulls samples to clean prototypes)
    scales = [g for g in rows[0].generated if all(g in r.generated for r in rows)]
    by_g = {g: [r.generated[g].misclassification.rate for r in rows] for g in scales}
    fits_g = {g: linear_fit(ps, v) for g, v in by_g.items()}
    gtable = ["| p | " + " | ".join(f"guidance {g}" for g in scales) + " |", "|---" * (len(scales) + 1) + "|"]
    gtable += [f"| {p:g} | " + " | ".join(_pct(by_g[g][i]) for g in scales) + " |" for i, p in enumerate(ps)]
    gtable.append(
        "| slope, R² | "
        + " | ".join(f"{fits_g[g]['slope']:.4f}, {_num(fits_g[g]['r2'], '.4f')}" for g in scales)
        + " |"
    )
    text = "\n".join(
        [
            f"# ddmini sweep (guidance {guidance})",
            "",
            *table,
            "",
            f"- misclassification = {fm['slope']:.4f} p + {fm['intercept']:.4f}, R² = {_num(fm['r2'], '.4f')}",
            f"- CAFD = {fc['slope']:.4f} p + {fc['intercept']:.4f}, R² = {_num(fc['r2'], '.4f')}",
            "",
            "## Misclassified share at every guidance scale",
            "",
            *gtable,
            "",
            "Plot: `sweep.png`.",
            "",
        ]
    )
    tg = [((r.targeted or {}).get("by_guidance") or {}).get(guidance) for r in rows]
    targeted = None
    if all(t and t["rate"] is not None for t in tg):  # a targeted sweep: the share in the target class, against p
        shares = [t["rate"] for t in tg]
        targeted = {"mode": rows[0].targeted["mode"], "share": shares, "fit": linear_fit(ps, shares)}
        ft = targeted["fit"]
        text += (f"\n## In their target class ({targeted['mode']})\n\n" + "\n".join(
            f"- p = {p:g}: {_pct(v)}" for p, v in zip(ps, shares))
            + f"\n- share = {ft['slope']:.4f} p + {ft['intercept']:.4f}, R² = {_num(ft['r2'], '.4f')}\n")  # fmt: skip
    write_text(text, where / "sweep.md")
    out = {
        "targeted": targeted,
        "guidance": guidance,
        "poison": ps,
        "misclassification": mis,
        "cafd_clean_test_soft": cafd,
        "fits": fits,
        "misclassification_by_guidance": by_g,
        "fits_by_guidance": fits_g,
    }
    write_json(out, where / "sweep.json")
    panels = [
        {"title": "misclassified share of generated images", "xs": ps, "ys": mis, "fit": fm},
        {"title": "CAFD (soft) vs clean test", "xs": ps, "ys": cafd, "fit": fc},
    ]
    if targeted:
        title = f"share in their target class ({targeted['mode']})"
        panels.append({"title": title, "xs": ps, "ys": targeted["share"], "fit": targeted["fit"]})
    plot_png(panels, where / "sweep.png")
    return out


def sweep_summary(out: dict) -> str:
    """The sweep's table and its fit, as ``ddmini sweep`` prints them (``out``: :func:`write_sweep`'s)."""
    lines = ["", "| p | misclassified | CAFD |", "|---|---|---|"]
    for p, m, c in zip(out["poison"], out["misclassification"], out["cafd_clean_test_soft"]):
        lines.append(f"| {p:g} | {100 * m:.2f}% | {c:.2f} |")
    fm = out["fits"]["misclassification"]
    lines.append(f"misclassification = {fm['slope']:.4f} p + {fm['intercept']:.4f} (R^2 = {fm['r2']:.4f})")
    if t := out.get("targeted"):
        ft = t["fit"]
        lines.append(
            f"in their target class = {ft['slope']:.4f} p + {ft['intercept']:.4f} (R^2 = {_num(ft['r2'], '.4f')})"
        )
    return "\n".join(lines)


def evaluation_summary(r, clean_test) -> str:
    """``ddmini evaluate``'s lines: misclassified share of the generated images (``r``: a GeneratedResult),
    per class, and the CAFDs, beside the clean test images' error (``clean_test``: a Misclassification)."""
    m = r.misclassification
    lines = [
        f"{m.n} generated images: misclassified {100 * m.rate:.2f}% (clean test images: {100 * clean_test.rate:.2f}%)",
        "per class: " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in enumerate(m.per_class)),
    ]
    lines += [f"CAFD {name}: {v.mean:.3f}" for name, v in r.cafd.items()]
    return "\n".join(lines)


def binomial_se(rate: float, n: int) -> float:
    """Binomial standard error of a rate measured on n images (NaN for none)."""
    return math.sqrt(max(rate * (1 - rate), 0.0) / n) if n else float("nan")


def rate_with_se(rate, n) -> str:
    """A rate and its binomial standard error, as a table cell: "73.8 ± 1.4 %"."""
    if rate is None or not n:
        return "n/a"
    return f"{100 * rate:.1f} ± {100 * binomial_se(rate, n):.1f} %"


def per_class_r(success: list[float], misclassified: list[float]) -> float | None:
    """Pearson's r between the attack's success and the generated images' misclassified share over the
    classes: does a class the attack turns more easily give more misleading samples? None when either is
    constant over the classes (r undefined), holds a NaN (a class without images) or the lists do not pair up."""
    a, b = np.asarray(success, dtype=np.float64), np.asarray(misclassified, dtype=np.float64)
    if (
        a.shape != b.shape
        or a.size < 3
        or not (np.isfinite(a).all() and np.isfinite(b).all())
        or a.std() == 0
        or b.std() == 0
    ):
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _field(r: dict, keys: tuple, kind, where: Path):
    """``r``'s field at the path ``keys``, of type ``kind`` (numbers: finite); one line naming the file and
    the field otherwise."""
    v, dotted = r, ".".join(keys)
    for part in keys:
        v = v.get(part) if isinstance(v, dict) else None
    ok = isinstance(v, kind) and not isinstance(v, bool)
    if ok and kind in (float, (int, float)):
        ok = math.isfinite(v)
    if not ok or (kind in (dict, list) and not v):
        what = {dict: "a non-empty object", list: "a non-empty list", str: "text"}.get(kind, "a finite number")
        raise ValueError(f"{where}: not a report.json of `ddmini run` ({dotted} must be {what}; got {v!r:.60})")
    return v


#: What ``ddmini compare`` reads of a report.json: the field and its type (every guidance scale's entry too).
REPORT_FIELDS = {
    "poison": (int, float),
    "headline_guidance": (int, float),
    "config": dict,
    "config.attack": dict,
    "attack": dict,
    "attack.success_rate": (int, float),
    "training_set": dict,
    "generated": dict,
}
GENERATED_FIELDS = {"misclassification.rate": (int, float), "misclassification.n": int,
                    "cafd.clean_test_soft": dict, "cafd.attacked_soft": dict}  # fmt: skip


def load_reports(paths) -> dict[str, dict]:
    """The report.json of each of ``paths`` (a run's report folder or the file itself), by the folder's name
    (its path where two share a name), each checked for the fields ``compare_table`` reads: one line naming
    the file and the field otherwise."""
    reports = {}
    for run in paths:
        path = Path(run) / "report.json" if Path(run).is_dir() else Path(run)
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ValueError(f"{path}: not a report.json of `ddmini run` (unreadable or not JSON)") from None
        if not isinstance(r, dict):
            raise ValueError(f"{path}: not a report.json of `ddmini run` (not a JSON object)")
        for name, kind in REPORT_FIELDS.items():
            _field(r, tuple(name.split(".")), kind, path)
        if not 0 <= r["poison"] <= 1:
            raise ValueError(f"{path}: not a report.json of `ddmini run` (poison must be in [0, 1]; got {r['poison']})")
        for g in r["generated"]:
            for name, kind in GENERATED_FIELDS.items():
                _field(r, ("generated", g, *name.split(".")), kind, path)
        try:
            from_dict(AttackConfig, r["config"]["attack"]).validate()
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a report.json of `ddmini run` (config.attack: {e})") from None
        name = path.parent.name
        reports[name if name not in reports else str(path.parent)] = r
    return reports


def _cell(v) -> str:
    """A markdown table cell: no line breaks, no column separators."""
    return " ".join(str(v).split()).replace("|", "\\|")


def compare_table(reports: dict[str, dict]) -> str:
    """Runs side by side (``ddmini compare``): each report.json (by name) as a row with its dataset, attack,
    the attack's success, size and margin, the misclassified share of its samples at every guidance scale
    any run sampled (± binomial standard error), the per-class r of success and misclassified samples at
    the headline scale (runs with p > 0), CAFD there and the diffusion training time."""
    scales = list(dict.fromkeys(g for r in reports.values() for g in r["generated"]))
    head = (
        "| run | dataset | p | attack | success | mean L2 | mean L∞ | misclassified at s = 0.8 | "
        + " | ".join(f"misclassified, guidance {g}" for g in scales)
        + " | per-class r (success, misclassified) | CAFD vs clean test | CAFD vs attacked set "
        "| diffusion training |"
    )
    rows = [head, "|---" * (head.count(" | ") + 1) + "|"]
    for name, r in reports.items():
        a, cfg = r["attack"], r["config"]
        margin = a.get("margin") or {}
        s08 = dict(zip(margin.get("scales", []), margin.get("still_misclassified", []))).get(0.8)
        hg = f"{r['headline_guidance']:g}"
        hg = hg if hg in r["generated"] else next(iter(r["generated"]))
        cafd, at_hg = r["generated"][hg]["cafd"], r["generated"][hg]["misclassification"]
        mis = [r["generated"][g]["misclassification"] if g in r["generated"] else None for g in scales]
        secs = r["training_set"].get("diffusion_train_seconds")
        rc = per_class_r(a.get("per_class_success") or [], at_hg.get("per_class") or []) if r["poison"] > 0 else None
        attack = from_dict(AttackConfig, cfg["attack"]).describe()
        minutes = _num(secs / 60 if secs is not None else None, ".1f")
        cafd_clean, cafd_att = _num(cafd["clean_test_soft"]["mean"], ".1f"), _num(cafd["attacked_soft"]["mean"], ".1f")
        cells = [_cell(name), _cell(cfg.get("dataset", "mnist")), f"{r['poison']:g}", _cell(attack),
                 _pct(a["success_rate"]),
                 _num(a.get("l2_mean")), _num(a.get("linf_mean")), _pct(s08),
                 *(rate_with_se(m["rate"], m["n"]) if m else "-" for m in mis),
                 "-" if rc is None else f"{rc:.2f} (w = {hg})", f"{cafd_clean} (w = {hg})", cafd_att,
                 f"{minutes} min, {r['training_set'].get('diffusion_steps') or 0:,} steps"]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
