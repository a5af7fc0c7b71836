"""AutoAttack: the standard protocol for a robust accuracy (Croce & Hein, ICML 2020, arXiv 2003.01690),
written here from its papers.

``autoattack(model, x, y, norm="linf", eps=0.3)`` returns, per image, the worst case the protocol found: an
adversarial image where one of its attacks fooled the model, else the clean image. ``evaluate`` also returns
the robust accuracy after each attack (an :class:`AutoAttackResult`). Each attack runs only on the images still
standing (classified correctly on the clean image and by every earlier attack's image):

- ``apgd-ce``: APGD on the cross-entropy, 100 iterations. APGD (Croce & Hein 2020) is PGD with momentum 0.75
  whose per-image step size starts at 2 eps and halves at checkpoints (0, 22 %, then gaps shrinking by 3 % of the
  iterations to at least 6 %) when fewer than 75 % of the steps since the last checkpoint raised the loss, or
  when neither the step size nor the best loss changed since it; a halving restarts from the best point.
- ``apgd-t``: APGD on the targeted DLR loss (the logit difference to the target over the spread of the top
  logits: scale-invariant), for each of the 9 classes the model ranks highest after the true one.
- ``fab-t``: FAB (Croce & Hein, ICML 2020, arXiv 1907.02044), targeted at those classes, 100 iterations: steps to
  the linearised boundary between the true and the target class (the minimal L-inf or L2 step inside [0, 1]),
  pulled towards the clean image by up to 0.1, overshooting by 1.05, and back by 0.9 once past it; it looks
  for the smallest adversarial perturbation, and counts where that is within eps.
- ``square``: Square Attack (Andriushchenko et al., ECCV 2020, arXiv 1912.00049), 5,000 queries of the model's
  scores, no gradients: random square-shaped updates at the ball's boundary kept where they lower the margin
  (L-inf: +-eps in a square; L2: the paper's two-halved pattern added to the square's old content).

``version="rand"`` is for a model whose outputs are random (a purifier in front, dropout left on): apgd-ce and
apgd-dlr with gradients averaged over 20 draws (EOT). ``standard`` refuses such a model.

``pgd``-style inputs: ``model`` returns logits for x (N, ...) in [0, 1]; it is used in eval mode with its
parameters frozen (:func:`ddmini.attacks.base.frozen`). Everything is seeded by ``seed``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .base import batches, check_inputs, check_positive, frozen, logit_margin, model_dtype, predict_logits
from .pgd import project_l2

NORMS = ("linf", "l2")
VERSIONS = ("standard", "rand")
#: The attacks of each version, in the order they run.
ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
#: The protocol's sizes: iterations of APGD and FAB, target classes, Square's queries, EOT draws (rand).
STEPS, TARGETS, QUERIES, EOT = 100, 9, 5000, 20


def reduced(steps: int, queries: int) -> str:
    """'' at the protocol's sizes, else a note of the cut ones (such a figure overstates robustness)."""
    return "" if (steps, queries) == (STEPS, QUERIES) else f" [reduced: {steps} iterations, {queries} queries]"


@dataclass
class AutoAttackResult:
    """Clean and robust accuracy (shares of the images) and the robust accuracy after each attack, in order."""

    norm: str
    eps: float
    version: str
    images: int
    clean: float
    robust: float
    after: dict = field(default_factory=dict)  # attack -> robust accuracy once it has run
    seconds: dict = field(default_factory=dict)  # attack -> seconds
    steps: int = STEPS  # APGD and FAB iterations
    queries: int = QUERIES  # Square's queries

    def reduced(self) -> str:
        return reduced(self.steps, self.queries)

    def line(self) -> str:
        steps = ", ".join(f"{k} {100 * v:.2f}" for k, v in self.after.items())
        return (
            f"AutoAttack ({self.version}, {self.norm} eps {self.eps:g}) on {self.images} images: clean "
            f"{100 * self.clean:.2f}%, robust {100 * self.robust:.2f}% (after {steps}){self.reduced()}"
        )

    def markdown(self) -> str:
        rows = [f"| clean | {100 * self.clean:.2f} | |"]
        rows += [f"| + {k} | {100 * v:.2f} | {self.seconds.get(k, 0.0):.1f} |" for k, v in self.after.items()]
        head = f"AutoAttack ({self.version}), {self.norm} eps {self.eps:g}, {self.images} images{self.reduced()}\n\n"
        return head + "| after | accuracy % | seconds |\n|---|---|---|\n" + "\n".join(rows)


def check_norm(norm: str) -> str:
    """The norm's canonical name ("Linf" -> "linf"); ValueError naming the norms otherwise."""
    n = str(norm).lower().replace("-", "")
    if n not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    return n


def _check(model, x, y, norm, eps, version) -> str:
    check_inputs(model, x, y)
    norm = check_norm(norm)
    check_positive("eps", eps, allow_zero=False)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}; got {version!r}")
    return norm


def is_random(model, x: torch.Tensor) -> bool:
    """Whether two forward passes of the same images (eval mode) give different logits."""
    xs = x[:16].to(model_dtype(model, x))
    with torch.no_grad(), frozen(model):
        a, b = model(xs), model(xs)
    return not torch.allclose(a, b, rtol=1e-5, atol=1e-6)


# ---- the pieces every attack uses -------------------------------------------------------------------------
def _flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    f = d.flatten(1)
    return f.abs().amax(1) if norm == "linf" else f.norm(dim=1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Into the eps-ball around x (L-inf: a clamp; L2: scaled back to radius eps), then into [0, 1]."""
    if norm == "l2":
        return project_l2(x_adv, x, eps)
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0.0, 1.0)


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / ||g|| for L2."""
    if norm == "linf":
        return g.sign()
    return g / _view(_flat_norm(g, "l2").clamp_min(1e-12), g)


def _random_start(x: torch.Tensor, eps: float, norm: str, gen: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        d = torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1
        d = eps * d.to(x.device)
    else:
        d = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        d = eps * d / _view(_flat_norm(d, "l2").clamp_min(1e-12), d)
    return (x + d).clamp(0.0, 1.0)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the difference-of-logits-ratio loss the attack ascends: untargeted -(z_y - max_{j != y} z_j)
    / (z_1 - z_3); targeted -(z_y - z_t) / (z_1 - (z_3 + z_4) / 2), z_k the k-th largest logit. Needs at least
    3 (untargeted) or 4 (targeted) classes."""
    top = logits.sort(1, descending=True).values
    if target is None:
        return logit_margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)
    zy = logits.gather(1, y[:, None]).squeeze(1)
    zt = logits.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _loss(name: str, logits, y, target):
    if name == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    return dlr_loss(logits, y, target if name == "dlr-t" else None)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size: ceil(p_j steps) for p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), while p_j <= 1."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p[1:]} - {0})  # round: 0.22 * 100 is 22.000000000000004


# ---- APGD -----------------------------------------------------------------------------------------------
def _apgd(model, x, y, *, norm, eps, steps, loss, target, gen, eot=1, momentum=0.75, rho=0.75):
    """APGD on one batch: (the first image found that the model misclassifies, else x; fooled mask)."""
    n = x.shape[0]

    def value_grad(idx, xa):
        tot = torch.zeros_like(xa)
        for _ in range(eot):
            xv = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xv)
                lv = _loss(loss, logits, y[idx], None if target is None else target[idx])
                (g,) = torch.autograd.grad(lv.sum(), xv)
            tot += g
        return lv.detach(), logits.detach(), tot / eot

    marks = set(checkpoints(steps))
    out, fooled = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    x_cur = _random_start(x, eps, norm, gen)
    idx = torch.arange(n, device=x.device)
    val, logits, grad = value_grad(idx, x_cur)

    def record(ids, xa, lg):
        new = (lg.argmax(1) != y[ids]) & ~fooled[ids]
        out[ids[new]] = xa[new]
        fooled[ids[new]] = True

    record(idx, x_cur, logits)
    eta = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
    best_val, x_best, g_best = val.clone(), x_cur.clone(), grad.clone()
    x_prev, ups = x_cur.clone(), torch.zeros(n, device=x.device)
    best_at_mark, halved_at_mark, last_mark = best_val.clone(), torch.zeros(n, dtype=torch.bool, device=x.device), 0
    for k in range(steps):
        a = (~fooled).nonzero().squeeze(1)  # the images still standing: the others are done
        if a.numel() == 0:
            break
        xa, xo, ga = x_cur[a], x[a], grad[a]
        z = project(xa + _view(eta[a], xa) * _direction(ga, norm), xo, eps, norm)
        if k > 0:  # the momentum step: mostly the new point, a quarter the last move
            z = project(xa + momentum * (z - xa) + (1 - momentum) * (xa - x_prev[a]), xo, eps, norm)
        x_prev[a], x_cur[a] = xa, z
        v, lg, g = value_grad(a, z)
        record(a, z, lg)
        ups[a] += (v > val[a]).float()
        val[a], grad[a] = v, g
        better = v > best_val[a]
        bi = a[better]
        best_val[bi], x_best[bi], g_best[bi] = v[better], z[better], g[better]
        if k + 1 in marks:
            span = k + 1 - last_mark
            halve = (ups < rho * span) | (~halved_at_mark & (best_val <= best_at_mark))
            halve &= ~fooled
            eta[halve] /= 2
            x_cur[halve], x_prev[halve], grad[halve], val[halve] = (
                x_best[halve],
                x_best[halve],
                g_best[halve],
                best_val[halve],
            )
            halved_at_mark, best_at_mark, last_mark = halve, best_val.clone(), k + 1
            ups.zero_()
    return out, fooled


# ---- FAB (targeted) -------------------------------------------------------------------------------------
def _hyperplane_step(w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, norm: str):
    """Per row, the d of least L-inf or L2 norm with w . d = c and lo <= d <= hi (lo <= 0 <= hi), or, where the
    box cannot reach the plane, the box's farthest point towards it. Exact: with w' = sign(c) w, the solution
    moves each coordinate towards sign(w'_i) by min(tau b_i, room_i) (b_i = 1 for L-inf, |w'_i| for L2; room_i
    the box's room that way), and w . d grows piecewise linearly in tau with a kink where a coordinate
    reaches the box: the kinks sorted, the segment holding c found from cumulative sums, tau solved on it."""
    s = torch.where(c >= 0, 1.0, -1.0).to(w.dtype)[:, None]
    ws = s * w
    room = torch.where(ws > 0, hi, -lo).clamp_min(0)
    aw = ws.abs()
    inf = torch.full_like(aw, float("inf"))
    if norm == "linf":
        kink, slope, base = torch.where(aw > 0, room, inf), aw, torch.ones_like(aw)
    else:
        kink, slope, base = torch.where(aw > 0, room / aw.clamp_min(1e-30), inf), aw * aw, aw
    full = aw * room  # what a coordinate gives once it is at the box
    kink, order = kink.sort(1)
    full, slope = full.gather(1, order), slope.gather(1, order)
    zero = torch.zeros_like(full[:, :1])
    given = torch.cat([zero, full.cumsum(1)], 1)  # given[m]: from the m coordinates at the box
    rate = torch.cat([slope.flip(1).cumsum(1).flip(1), zero], 1)  # rate[m]: slope of the others
    at_kink = torch.where(torch.isinf(kink), inf, given[:, :-1] + kink * rate[:, :-1])
    target = c.abs()[:, None]
    m = (at_kink <= target).sum(1, keepdim=True)  # coordinates at the box on the solution's segment
    g, r = given.gather(1, m), rate.gather(1, m)
    tau = torch.where(r > 0, (target - g) / r.clamp_min(1e-30), inf[:, :1])
    move = torch.where(aw > 0, torch.minimum(tau * base, room), torch.zeros_like(aw))
    return ws.sign() * move


def _fab_t(model, x, y, target, *, norm, eps, steps, alpha_max=0.1, overshoot=1.05, back=0.9):
    """Targeted FAB on one batch: (the smallest adversarial image found, else x; fooled within eps)."""
    n = x.shape[0]
    flat = x.flatten(1)
    cur = flat.clone()
    best, best_norm = flat.clone(), torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    rows = torch.arange(n, device=x.device)
    for _ in range(steps):
        xv = cur.reshape(x.shape).detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xv)
            gap = logits[rows, y] - logits[rows, target]  # > 0 while the true class beats the target
            (w,) = torch.autograd.grad(gap.sum(), xv)
        w, f = w.flatten(1), gap.detach()
        d_cur = _hyperplane_step(w, -f, -cur, 1 - cur, norm)
        f_orig = f + (w * (flat - cur)).sum(1)  # the same linearisation, at the clean image
        d_orig = _hyperplane_step(w, -f_orig, -flat, 1 - flat, norm)
        n_cur, n_orig = _flat_norm(d_cur, norm), _flat_norm(d_orig, norm)
        alpha = torch.clamp(n_cur / (n_cur + n_orig).clamp_min(1e-12), max=alpha_max)[:, None]
        nxt = ((1 - alpha) * (cur + overshoot * d_cur) + alpha * (flat + overshoot * d_orig)).clamp(0, 1)
        with torch.no_grad():
            adv = model(nxt.reshape(x.shape)).argmax(1) != y
        size = _flat_norm(nxt - flat, norm)
        better = adv & (size < best_norm)
        best[better], best_norm[better] = nxt[better], size[better]
        nxt[adv] = (1 - back) * flat[adv] + back * nxt[adv]  # back towards the clean image once past
        cur = nxt
    fooled = best_norm <= eps * (1 + 1e-5)
    return torch.where(fooled[:, None], best, flat).reshape(x.shape), fooled


# ---- Square ---------------------------------------------------------------------------------------------
def _square_size(p_init: float, i: int, queries: int) -> float:
    """The share of the image a square covers at query i: p_init halved at the paper's query counts (of
    10,000 queries, rescaled to ``queries``)."""
    i = int(i / queries * 10000)
    halvings = sum(i > m for m in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / 2**halvings


def _side(share: float, h: int, w: int, norm: str) -> int:
    """A square's side for a share of the image: at least 1 pixel (L-inf), at least 3 and odd (L2, whose
    pattern needs a centre and two halves); never the whole image."""
    s = round(math.sqrt(share * h * w))
    if norm == "l2":
        s = max(s, 3)
        s += 1 - s % 2
    return max(min(s, h - 1, w - 1), 1)


def _window(n: int, h: int, w: int, side: int, gen: torch.Generator, device) -> torch.Tensor:
    """(n, 1, h, w) bool masks, each a side x side square at a random place."""
    r = torch.randint(0, h - side + 1, (n,), generator=gen).to(device)
    c = torch.randint(0, w - side + 1, (n,), generator=gen).to(device)
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    in_r = (rows[None] >= r[:, None]) & (rows[None] < r[:, None] + side)
    in_c = (cols[None] >= c[:, None]) & (cols[None] < c[:, None] + side)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _pyramid(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) nested rectangles around the centre (rows // 2, cols // 2), the k-th ring from it adding
    1 / (k + 1)^2 to every pixel it encloses: largest at the centre, falling off as 1 / distance; unit L2 norm."""
    i = (torch.arange(rows)[:, None] - rows // 2).abs()
    j = (torch.arange(cols)[None] - cols // 2).abs()
    ring = torch.maximum(i, j)
    k = max(rows // 2, cols // 2) + 1
    tail = (1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** 2).flip(0).cumsum(0).flip(0)  # sum_{r>=d}
    p = tail[ring]
    return p / p.norm()


@functools.cache
def _eta_pattern(side: int) -> torch.Tensor:
    """The paper's eta for one side (float64, CPU; a side has one pattern, so each is built once and never
    written to): a pyramid in the top half of the rows and a negative one of equal norm in the bottom half,
    unit L2 norm in all."""
    if side < 2:
        return torch.ones(1, 1, dtype=torch.float64)
    top = side // 2
    e = torch.cat([_pyramid(top, side), -_pyramid(side - top, side)])
    return e / e.norm()


def _eta(n: int, side: int, gen: torch.Generator, dtype, device) -> torch.Tensor:
    """(n, side, side) of the L2 attack's update pattern (:func:`_eta_pattern`), transposed in a random half."""
    e = _eta_pattern(side).to(dtype=dtype, device=device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(device)[:, None, None]
    return torch.where(flip, e.T, e)


def _signs(shape: tuple, gen: torch.Generator, dtype, device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(device, dtype)


def _square(model, x, y, *, norm, eps, queries, gen, p_init=0.8):
    """Square Attack on one batch of images (N, C, H, W): (the first image found that fools the model, else x;
    fooled mask). Each image has its own squares (the paper's code draws one place for the whole batch)."""
    if x.ndim != 4:
        raise ValueError(f"the Square attack needs images (N, C, H, W); got shape {tuple(x.shape)}")
    n, ch, h, w = x.shape
    dev, dt = x.device, x.dtype
    if norm == "linf":  # vertical stripes of +-eps
        d = eps * _signs((n, ch, 1, w), gen, dt, dev).expand(n, ch, h, w)
    else:  # a centred grid of eta patterns (side h // 5) with random signs, scaled to radius eps
        side = max(h // 5, 1)
        d = torch.zeros_like(x)
        r0, c0 = (h - h // side * side) // 2, (w - w // side * side) // 2
        for i in range(r0, h - side + 1, side):
            for j in range(c0, w - side + 1, side):
                e = _eta(n, side, gen, dt, dev)[:, None]
                d[:, :, i : i + side, j : j + side] = _signs((n, ch, 1, 1), gen, dt, dev) * e
        d = eps * d / _view(_flat_norm(d, "l2").clamp_min(1e-12), d)
    cur = (x + d).clamp(0, 1)
    with torch.no_grad():
        margin = -logit_margin(model(cur), y)
    for i in range(1, queries):
        a = (margin > 0).nonzero().squeeze(1)
        if a.numel() == 0:
            break
        side = _side(_square_size(p_init, i, queries), h, w, norm)
        xa, ca = x[a], cur[a]
        da = ca - xa
        win = _window(a.numel(), h, w, side, gen, dev)
        sign = _signs((a.numel(), ch, 1, 1), gen, dt, dev)
        if norm == "linf":
            cand = project(xa + torch.where(win, eps * sign, da), xa, eps, norm)
            # A square whose signs the image already has would spend a query on the same image: the paper's
            # code draws again until it differs; with two signs a channel, the other signs always do.
            same = (cand - ca).abs().flatten(1).amax(1) < 1e-7
            if same.any():
                s = same.nonzero().squeeze(1)
                redo = torch.where(win[s], -eps * sign[s], da[s])
                cand[s] = project(xa[s] + redo, xa[s], eps, norm)
        else:
            cand = xa + _l2_update(da, win, _window(a.numel(), h, w, side, gen, dev) & ~win, sign, side, eps, gen)
            cand = project(cand, xa, eps, norm)
        with torch.no_grad():
            m = -logit_margin(model(cand), y[a])
        better = m < margin[a]
        cur[a[better]], margin[a[better]] = cand[better], m[better]
    fooled = margin <= 0
    return torch.where(_view(fooled, x), cur, x), fooled


def _l2_update(da, win, win2, sign, side, eps, gen):
    """The L2 attack's new perturbation (the paper's update): the first square gets a fresh eta pattern plus
    its old content (each per channel at unit norm; the sum keeps the direction that worked), scaled to hold
    both squares' old share of the radius and whatever the radius still has spare; the second square is
    emptied. The whole stays at radius eps (the paper's code gives a square of C channels C times the old
    share, then shrinks everything back to eps; here the budget is shared, which is the same for C = 1)."""
    n, ch = da.shape[:2]
    both = win | win2
    mass = (da * da * both).flatten(1).sum(1)
    spare = (eps**2 - (da * da).flatten(1).sum(1)).clamp_min(0)
    w1 = win.expand_as(da)
    old = da[w1].reshape(n, ch, side, side)
    old = old / (old.flatten(2).norm(dim=2)[..., None, None] + 1e-12)
    new = sign * _eta(n, side, gen, da.dtype, da.device)[:, None] + old
    new = new / (new.flatten(2).norm(dim=2)[..., None, None] + 1e-12)
    new = new * _view(((mass + spare) / ch).sqrt(), new)
    out = torch.where(both, 0.0, da)
    out[w1] = new.flatten()
    return out


# ---- the protocol ---------------------------------------------------------------------------------------
def evaluate(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "linf",
    eps: float = 0.3,
    version: str = "standard",
    seed: int = 0,
    batch_size: int = 500,
    steps: int = STEPS,
    queries: int = QUERIES,
    targets: int = TARGETS,
    eot: int = EOT,
    attacks: tuple[str, ...] | None = None,
    on_attack=None,
) -> tuple[torch.Tensor, AutoAttackResult]:
    """AutoAttack: (per-image worst-case images, the accuracies). ``steps``, ``queries``, ``targets`` and ``eot``
    (the rand version's draws per gradient) are the protocol's (change them only to try it quickly or where
    the cost asks); ``attacks`` runs a subset of the version's, in its order; ``on_attack(name,
    robust_accuracy)`` is called after each."""
    norm = _check(model, x, y, norm, eps, version)
    check_positive("batch_size", batch_size, integer=True)
    check_positive("eot", eot, integer=True)
    for name, v in (("steps", steps), ("queries", queries), ("targets", targets)):
        check_positive(name, v, integer=True)
    names = ATTACKS[version] if attacks is None else tuple(a for a in ATTACKS[version] if a in attacks)
    if attacks is not None and set(attacks) - set(ATTACKS[version]):
        raise ValueError(f"{version} AutoAttack runs {', '.join(ATTACKS[version])}; got {', '.join(attacks)}")
    with frozen(model):
        if version == "standard" and is_random(model, x):
            raise ValueError("the model's outputs are random (two passes differ): use version='rand' (EOT)")
        xd = x.to(model_dtype(model, x))
        logits = predict_logits(model, xd, batch_size)
        k = logits.shape[1]
        if any(a in names for a in ("apgd-t", "fab-t")) and k < 4:
            raise ValueError(f"the targeted attacks need at least 4 classes; the model has {k}")
        if "apgd-dlr" in names and k < 3:
            raise ValueError(f"the DLR loss needs at least 3 classes; the model has {k}")
        ranked = logits.argsort(1, descending=True)
        ok = logits.argmax(1) == y
        clean = ok.float().mean().item()
        res = AutoAttackResult(norm, float(eps), version, int(x.shape[0]), clean, clean, steps=steps, queries=queries)
        out = xd.clone()
        gen = torch.Generator().manual_seed(seed)
        for name in names:
            t0 = time.perf_counter()
            standing = ok.nonzero().squeeze(1)
            rounds = range(2, min(targets, k - 1) + 2) if name in ("apgd-t", "fab-t") else (None,)
            for r in rounds:
                for s in batches(standing.numel(), batch_size):
                    idx = standing[s]
                    idx = idx[ok[idx]]  # an earlier target round may have fooled some
                    if idx.numel() == 0:
                        continue
                    xb, yb = xd[idx], y[idx]
                    tb = None if r is None else ranked[idx, r - 1]
                    if name in ("apgd-ce", "apgd-dlr", "apgd-t"):
                        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-t"}[name]
                        draws = eot if version == "rand" else 1
                        got, fooled = _apgd(model, xb, yb, norm=norm, eps=eps, steps=steps, loss=loss, target=tb,
                                            gen=gen, eot=draws)  # fmt: skip
                    elif name == "fab-t":
                        got, fooled = _fab_t(model, xb, yb, tb, norm=norm, eps=eps, steps=steps)
                    else:
                        got, fooled = _square(model, xb, yb, norm=norm, eps=eps, queries=queries, gen=gen)
                    # a fooled image counts only once the model, given it again, misclassifies it
                    with torch.no_grad():
                        fooled &= model(got).argmax(1) != yb
                    out[idx[fooled]] = got[fooled]
                    ok[idx[fooled]] = False
            res.after[name] = ok.float().mean().item()
            res.seconds[name] = time.perf_counter() - t0
            if on_attack is not None:
                on_attack(name, res.after[name])
        res.robust = ok.float().mean().item()
    return out.to(x.dtype), res


def autoattack(
    model, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, version: str = "standard", seed: int = 0
) -> torch.Tensor:
    """AutoAttack's per-image worst case: an image that fools ``model`` where one of the version's attacks
    found one (inside the eps-ball of ``norm`` around x and [0, 1]), else the clean image."""
    return evaluate(model, x, y, norm=norm, eps=eps, version=version, seed=seed)[0]
