"""Fitting one cine slice: the INR image (and optionally the coil maps) trained on the sampled k-space.

Loss, with ``A = mask * FFT2c * Coils(S)`` and ``N`` the number of pixels of the cine::

    (1 / N) sum rho(A x - y)  +  tv_space * mean |grad_xy x|  +  tv_time * mean |d_t x|  +  llr * LLR(x)

with ``rho`` the squared magnitude (L2) or a Huber function of the real and imaginary parts and ``LLR`` the
locally low-rank term (:class:`inrsr.recon.loss.LocallyLowRank`, on every ``llr_every``-th step). A random share of
the sampled lines outside the ACS is held out of the loss; every step reports the relative error on them, and
the image at the step with the lowest held-out error after a warm-up is kept. When it has settled (its best value
fell by at most ``settle_tol`` over ``patience`` steps), the regularisation weights are lowered (``tv_stages``); a
lowering that does not help is undone once, and training stops when the error settles again
(:class:`WeightSchedule`). With ``llr_race``, other lowering factors for the low-rank weight alone are raced from
the first lowering: each runs ``race_steps`` steps from the same saved state, and the fit goes on from the end of
the one with the lowest held-out error. The final hard data-consistency step puts every measured sample back,
held-out ones included.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..forward.kspace import FFT2cColumns, SenseColumns, fft2c, ifft2c, rss
from ..optim import FusedAdam
from ..progress import Progress
from .gram import GramDataTerm
from .loss import LocallyLowRank, SenseDataTerm, TotalVariation, frame_loss
from .model import CineField, CoilField


@dataclass
class FitSettings:
    """Optimisation settings of one slice; :meth:`inrsr.recon.config.ReconConfig.fit_settings` makes them from the
    command's settings, where the defaults live."""

    encoding: str
    n_levels: int
    features_per_level: int
    hidden: int
    n_hidden_layers: int
    loss: str
    tv_space: float
    tv_time: float
    steps: int
    lr: float
    lr_final: float
    patience: int
    joint_coils: bool
    render_frames: int | None  # also render the chosen model at this many frames over the cycle
    tv_stages: int  # times the TV weights may be lowered (by tv_factor) when the held-out error has settled
    tv_factor: float
    llr: float = 0.0  # weight of the locally low-rank term (nuclear norm of each block's Casorati matrix)
    llr_block: int = 8
    llr_every: int = 1  # the low-rank term on every n-th step only, n times as strong (its eigendecompositions cost)
    huber_delta: float = 0.01
    warmup: float = 0.2  # share of the steps before the held-out error may choose one
    settle_tol: float = 0.0  # settled: the best held-out error fell by at most this share over `patience` steps
    weight_ramp: int = 0  # steps over which a lowering of the weights is spread, geometrically (0: at once)
    # other factors for the low-rank weight's own lowerings (besides tv_factor), raced on the held-out error over
    # race_steps steps from the first lowering (empty: the low-rank weight is lowered with the TV weights)
    llr_race: tuple[float, ...] = ()
    race_steps: int = 40


@dataclass
class _Run:
    """What a fit has found so far, saved and restored when lowering factors are raced."""

    best: tuple  # (held-out error, step, image, maps) of the best step
    history: dict[str, list[float]]
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # that step's model, to render other frames
    llr_power: float = 1.0  # the low-rank weight's factor is the TV weights' factor to this power
    race: list[float] = field(default_factory=list)  # each raced factor's best held-out error


def _snapshot(opt: FusedAdam, schedule: WeightSchedule, run: _Run, gen: torch.Generator) -> dict:
    return {
        "params": [p.detach().clone() for p in opt.params],
        "adam": opt.state(),
        "schedule": copy.deepcopy(schedule),
        "run": (run.best, {k: list(v) for k, v in run.history.items()}, run.best_state, run.llr_power),
        "gen": gen.get_state(),
    }


def _restore(state: dict, opt: FusedAdam, run: _Run, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p, saved in zip(opt.params, state["params"], strict=True):
            p.copy_(saved)
    opt.load_state(state["adam"])
    run.best, history, run.best_state, run.llr_power = state["run"]
    run.history = {k: list(v) for k, v in history.items()}
    gen.set_state(state["gen"])


@dataclass
class FitResult:
    image: torch.Tensor  # (t, x, y) complex, best held-out step (before data consistency)
    maps: torch.Tensor  # (C, x, y) complex, the maps used (learned ones with joint coils)
    best_step: int
    steps_run: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    rendered: torch.Tensor | None = None  # (render_frames, x, y) complex, the chosen step's model
    llr_factor: float | None = None  # the low-rank weight's lowering factor the race chose (None: no race)
    race: list[float] = field(default_factory=list)  # each raced factor's best held-out error, tv_factor's first


def zero_filled(kspace: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares of the zero-filled coil images: ``(t, C, kx, ky)`` -> ``(t, x, y)`` magnitude."""
    return rss(ifft2c(kspace), dim=1)


def data_consistency(image: torch.Tensor, maps: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard data consistency: measured samples replace predicted ones, then conj(S) coil combination.

    ``image (t, x, y)``, ``maps (C, x, y)``, ``kspace (t, C, kx, ky)``, ``mask (t, kx, ky)`` -> ``(t, x, y)``.
    """
    pred = fft2c(image[:, None] * maps)
    pred = torch.where(mask[:, None], kspace, pred)
    return (ifft2c(pred) * maps.conj()).sum(1)


def sampled_columns(mask: torch.Tensor, share: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """The ky columns a forward model must compute for ``mask (t, kx, ky)``, and which of them are real.

    When every frame samples the same columns (or the frames' own sets are not much smaller than their union):
    ``(K,)`` columns, the union, all valid. Otherwise (k-t sampling) ``(t, K)``: each frame's own columns,
    padded to the largest count by repeating its first one, and ``valid (t, K)`` false on the padding.

    >>> m = torch.zeros(2, 1, 8, dtype=torch.bool); m[0, 0, [0, 4]] = True; m[1, 0, [2, 4]] = True
    >>> sampled_columns(m, share=0.8)[0].tolist()
    [[0, 4], [2, 4]]
    >>> sampled_columns(m, share=0.5)[0].tolist()
    [0, 2, 4]
    """
    per_frame = mask.any(dim=1)  # (t, ky)
    union = torch.nonzero(per_frame.any(dim=0)).squeeze(1)
    counts = per_frame.sum(dim=1)
    k_max = int(counts.max())
    if k_max >= share * len(union):
        return union, torch.ones(mask.shape[0], len(union), dtype=torch.bool, device=mask.device)
    cols = torch.empty(mask.shape[0], k_max, dtype=torch.long, device=mask.device)
    valid = torch.zeros(mask.shape[0], k_max, dtype=torch.bool, device=mask.device)
    for t in range(mask.shape[0]):
        idx = torch.nonzero(per_frame[t]).squeeze(1)
        cols[t] = idx[0] if len(idx) else 0
        cols[t, : len(idx)] = idx
        valid[t, : len(idx)] = True
    return cols, valid


def _take_columns(x: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``x (t, ..., ky)`` at ``cols``: ``(K,)`` for all frames or ``(t, K)`` per frame -> ``(t, ..., K)``."""
    if cols.ndim == 1:
        return x[..., cols]
    index = cols.reshape(cols.shape[0], *([1] * (x.ndim - 2)), cols.shape[1])
    return torch.gather(x, -1, index.expand(*x.shape[:-1], cols.shape[1]))


def _acs_window(ny: int, acs: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A Hann window over the ACS ky lines ``[start, stop)``, zero elsewhere: ``(ny,)``."""
    window = torch.zeros(ny, dtype=torch.float32, device=device)
    n = acs[1] - acs[0]
    if n > 0:
        window[acs[0] : acs[1]] = torch.hann_window(n + 2, periodic=False, device=device)[1:-1]
    return window


def motion_weight(
    kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor, acs: tuple[int, int], scale: float
) -> torch.Tensor:
    """Weight of the temporal terms per pixel, ``(x, y)``, from the low-resolution cine of the ACS lines (the
    training data of k-t SENSE): ``1 / (1 + m / scale)``, with ``m`` the RMS temporal deviation of that cine
    relative to its largest mean magnitude, over the frames that have ACS samples. About 1 where nothing moves; low
    where the heart does.

    ``kspace (t, C, kx, ky)``, ``mask (t, kx, ky)``, ``maps (C, x, y)``, ``acs`` the ACS ky lines ``[start, stop)``.
    """
    nt, nc, nx, ny = kspace.shape
    window = _acs_window(ny, acs, kspace.device)
    has_acs = mask[:, :, acs[0] : acs[1]].flatten(1).any(1)  # frames without samples say nothing of motion
    low = (ifft2c(kspace[has_acs] * mask[has_acs, None] * window) * maps.conj()).sum(1)  # (t, x, y)
    if len(low) == 0:
        return torch.ones(nx, ny, device=kspace.device)
    mean = low.mean(0)
    dev = torch.sqrt((low - mean).abs().pow(2).mean(0)) / mean.abs().max().clamp_min(1e-30)
    return 1.0 / (1.0 + dev / scale)


class WeightSchedule:
    """When to lower the regularisation weights and when to stop, from the held-out error alone.

    The error has *settled* when its best value fell by at most ``tol`` (relative) over the last ``patience``
    steps of a stage (after ``first``, the warm-up's last step). Then, if the current weights still improved it
    (or are the first), they are lowered by ``factor`` (at most ``stages`` times); if a lowering did not help, the
    previous weights come back once and the fit trains on there; settled at the last weights, it stops.

    >>> w = WeightSchedule(patience=2, stages=1, factor=0.5)
    >>> [w.update(step, best, best_step) or w.scale for step, best, best_step in
    ...  [(0, 1.0, 0), (1, 0.9, 1), (2, 0.9, 1), (3, 0.9, 1), (4, 0.9, 1), (5, 0.8, 5), (6, 0.7, 6)]]
    [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    >>> w.update(7, 0.7, 6), w.update(8, 0.7, 6), w.update(9, 0.7, 6)
    (False, False, True)

    With a tolerance, an error that still falls, but slowly, has settled too:

    >>> w = WeightSchedule(patience=2, stages=1, factor=0.5, tol=0.05)
    >>> [w.update(step, 1.0 - 0.01 * step, step) or w.scale for step in range(5)]
    [1.0, 1.0, 1.0, 0.5, 0.5]

    A lowering after which the error does not improve is undone, once:

    >>> w = WeightSchedule(patience=1, stages=2, factor=0.5)
    >>> [w.update(step, 1.0, 0) or w.scale for step in range(6)], w.update(6, 1.0, 0)
    ([1.0, 1.0, 0.5, 0.5, 1.0, 1.0], True)

    With a ``ramp``, the factor the fit applies (:meth:`advance`) reaches a new :attr:`scale` over that many steps,
    geometrically, so that the regularisation's share of the gradient does not drop tenfold in one step:

    >>> w = WeightSchedule(patience=1, stages=1, factor=0.25, ramp=2)
    >>> w.scale = 0.25
    >>> [round(w.advance(), 3) for _ in range(3)]
    [0.5, 0.25, 0.25]
    """

    def __init__(
        self, patience: int, stages: int, factor: float, tol: float = 0.0, first: int = 0, ramp: int = 0
    ) -> None:
        self.patience, self.stages, self.factor, self.tol, self.first = patience, stages, factor, tol, first
        self.scale = 1.0  # the weights' factor now
        self.ramp, self.applied = ramp, 1.0  # the factor applied on the way to `scale`
        self.stage, self.stage_start, self.undone = 0, 0, False
        self._best: list[float] = []  # the best held-out error at each step

    def advance(self) -> float:
        """The factor for the next step: :attr:`scale`, reached from the factor applied before by at most
        ``factor ** (1 / ramp)`` a step (``ramp`` 0: at once)."""
        if self.ramp <= 0:
            self.applied = self.scale
        elif self.scale < self.applied:
            self.applied = max(self.scale, self.applied * self.factor ** (1 / self.ramp))
        elif self.scale > self.applied:
            self.applied = min(self.scale, self.applied / self.factor ** (1 / self.ramp))
        return self.applied

    def update(self, step: int, best: float, best_step: int) -> bool:
        """Step ``step`` ended with the best held-out error ``best``, reached at ``best_step``; true: stop."""
        self._best.append(best)
        ref = step - self.patience - 1
        if ref < max(self.stage_start, self.first) or self._best[ref] - best > self.tol * abs(best):
            return False
        failed = self.stage > 0 and best_step < self.stage_start
        if self.undone or (self.stage >= self.stages and not failed):
            return True
        if failed:  # the data ask for no less regularisation: back to the previous weights, once
            self.undone, self.scale = True, self.scale / self.factor
        else:
            self.stage, self.scale = self.stage + 1, self.scale * self.factor
        self.stage_start = step
        return False


def fit_slice(
    kspace: torch.Tensor,
    train_mask: torch.Tensor,
    holdout_mask: torch.Tensor,
    maps: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    time_weight: torch.Tensor | None = None,
) -> FitResult:
    """Train an image field (and coil field when ``settings.joint_coils``) on one slice.

    ``kspace (t, C, kx, ky)`` normalised; masks ``(t, kx, ky)`` bool; ``maps (C, x, y)`` (the initial maps
    with joint coils). ``on_step(step, image)`` is called with each step's image (diagnostics and tests).
    """
    start = time.perf_counter()
    nt, nc, nx, ny = kspace.shape
    device = kspace.device
    model = CineField(
        (nx, ny, nt),
        encoding=settings.encoding,
        n_levels=settings.n_levels,
        features_per_level=settings.features_per_level,
        hidden=settings.hidden,
        n_hidden_layers=settings.n_hidden_layers,
        generator=generator,
    ).to(device)
    params = list(model.parameters())
    coil_field = None
    if settings.joint_coils and nc > 1:
        coil_field = CoilField((nx, ny), nc).to(device)
        coil_field.fit_to(maps)
        params += list(coil_field.parameters())
    # eps far below the gradients of hash-grid features (Instant-NGP uses 1e-15); 1e-8 would damp them.
    opt = FusedAdam(params, lr=settings.lr, betas=(0.9, 0.99), eps=1e-15)
    gamma = (settings.lr_final / settings.lr) ** (1 / max(settings.steps - 1, 1))  # the rate decays exponentially

    # Only the sampled ky columns are ever compared with data: the forward model computes just those.
    cols, valid = sampled_columns(train_mask | holdout_mask)
    # fixed maps: the fused operator, compared with the data in its own frame (axes and signs, see SenseColumns);
    # learned maps: autograd through their product with the image
    sense = SenseColumns(maps, cols, nt) if coil_field is None else None
    fft_cols = FFT2cColumns((nt, nc, nx, ny), cols.to(device)) if coil_field is not None else None
    y = _take_columns(kspace, cols)  # (t, C, kx, K)
    w_train = (_take_columns(train_mask, cols) & valid[:, None, :])[:, None].to(torch.float32)  # (t, 1, kx, K)
    w_hold = (_take_columns(holdout_mask, cols) & valid[:, None, :])[:, None].to(torch.float32)
    if sense is not None:
        y, w_train, w_hold = sense.native_data(y), sense.native_layout(w_train), sense.native_layout(w_hold)
    has_hold = bool(holdout_mask.any())
    n_pix = nt * nx * ny
    # The data term (fixed maps, L2) and the total variation are evaluated with their gradients (frame_loss: the
    # data term per frame or through normal matrices, TV on blocks of frames); learned maps and the Huber loss go
    # through autograd on the whole cine.
    fused: SenseDataTerm | GramDataTerm | None = None
    if sense is not None and settings.loss == "l2":
        fused = SenseDataTerm(sense, y, w_train, w_hold, 1 / n_pix)
        # the same lines in every frame: the whole cine through per-row normal matrices (inrsr/recon/gram.py)
        fused = GramDataTerm.of(fused) or fused
    hold_norm = (fused.hold_norm if fused is not None else float((w_hold * y.abs() ** 2).sum())) if has_hold else 1.0
    tv = TotalVariation((nt, nx, ny), settings.tv_space, settings.tv_time, time_weight)
    lowrank = LocallyLowRank(settings.llr_block, time_weight) if settings.llr > 0 and nt > 1 else None

    def data_term(img: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The data term through autograd (differentiable) and the held-out sum."""
        pred = sense.native(img) if sense is not None else fft_cols(img[:, None] * s)  # type: ignore[misc]
        r = pred - y
        power = r.real**2 + r.imag**2
        if settings.loss == "huber":
            rho = F.huber_loss(
                torch.view_as_real(pred), torch.view_as_real(y), delta=settings.huber_delta, reduction="none"
            ).sum(-1)
            total = 2 * (w_train * rho).sum()
        else:
            total = (w_train * power).sum()
        return total / n_pix, float((w_hold * power.detach()).sum())

    # Early steps predict almost nothing on the held-out lines; their error (about 1) can only look good when the
    # held-out lines are noise-dominated, so the choice starts after a warm-up.
    warmup = int(settings.warmup * settings.steps)
    # without held-out lines nothing tells when to lower the weights or stop: fixed weights, every step
    schedule = WeightSchedule(
        settings.patience,
        settings.tv_stages,
        settings.tv_factor,
        settings.settle_tol,
        first=warmup - 1,
        ramp=settings.weight_ramp,
    )
    run = _Run(best=(float("inf"), -1, None, None), history={"loss": [], "holdout": [], "tv_scale": [], "weights": []})
    llr_gen = torch.Generator().manual_seed(0)

    def train_step(step: int) -> bool:
        """One step of the fit; true: the held-out rule says stop."""
        opt.zero_grad()
        planes = model.render_planes()  # (2, t, x, y): real and imaginary parts
        s = coil_field.maps() if coil_field is not None else maps
        weights = schedule.advance()
        tv.space, tv.time = weights * settings.tv_space, weights * settings.tv_time
        # the low-rank term on every llr_every-th step, that many times as strong, on a randomly shifted grid
        regularisers: list[TotalVariation | LocallyLowRank] = [tv]
        if lowrank is not None and step % settings.llr_every == 0:
            sx, sy = (int(v) for v in torch.randint(0, lowrank.block, (2,), generator=llr_gen))
            lowrank.shift = (sx, sy)
            lowrank.strength = weights**run.llr_power * settings.llr * settings.llr_every
            regularisers.append(lowrank)
        if fused is not None:
            loss = frame_loss(planes, [fused, *regularisers])
            hold_sum = fused.hold
        else:
            loss, hold_sum = data_term(torch.complex(planes[0], planes[1]), s)
            if tv.space > 0 or tv.time > 0 or len(regularisers) > 1:
                loss = loss + frame_loss(planes, regularisers)
        with torch.no_grad():
            if has_hold:
                hold = hold_sum / hold_norm
            else:
                hold = -float(step)  # nothing held out: keep the last step
        keep = hold < run.best[0] or step < warmup
        if on_step is not None or keep:
            current = torch.complex(planes[0].detach(), planes[1].detach())  # a new tensor
            if on_step is not None:
                on_step(step, current)
        if keep:
            run.best = (hold, step, current, s.detach().clone())
            if settings.render_frames is not None:
                run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        loss_value = float(loss.detach())
        run.history["loss"].append(loss_value)
        run.history["holdout"].append(hold if has_hold else float("nan"))
        run.history["tv_scale"].append(schedule.scale)
        run.history["weights"].append(weights)
        if progress is not None:
            progress.update(1, loss=loss_value, holdout=hold if has_hold else float("nan"))
        if has_hold and schedule.update(step, run.best[0], run.best[1]):
            return True
        loss.backward()
        opt.step()
        opt.lr *= gamma
        return False

    def train_until(first: int, stop: int) -> tuple[int, bool]:
        """Steps ``first .. stop - 1``, fewer when the held-out rule stops the fit: the next step, and whether it
        stopped."""
        step = first
        while step < stop:
            step += 1
            if train_step(step - 1):
                return step, True
        return step, False

    # The low-rank weight's own lowering factors, raced on the held-out error from the first lowering of the
    # weights (the fit is the same for all of them up to there): each runs `race_steps` steps from the same state,
    # and the fit goes on from the end of the one with the lowest held-out error.
    powers = [1.0] + [math.log(f) / math.log(settings.tv_factor) for f in settings.llr_race]

    def race(first: int) -> tuple[int, bool]:
        nonlocal schedule
        start_state = _snapshot(opt, schedule, run, llr_gen)
        ends = []
        for power in powers:
            _restore(start_state, opt, run, llr_gen)
            schedule = copy.deepcopy(start_state["schedule"])
            run.llr_power = power
            last, stopped = train_until(first, min(first + settings.race_steps, settings.steps))
            score = min(run.history["holdout"][first:last])
            ends.append((score, last, stopped, _snapshot(opt, schedule, run, llr_gen)))
        _, last, stopped, end_state = min(ends, key=lambda e: e[0])
        _restore(end_state, opt, run, llr_gen)
        schedule = end_state["schedule"]
        run.race = [e[0] for e in ends]
        return last, stopped

    raced = len(powers) == 1 or lowrank is None or not has_hold
    step, stopped = 0, False
    while step < settings.steps and not stopped:
        if not raced and schedule.stage == 1:
            raced = True
            step, stopped = race(step)
        else:
            step, stopped = train_until(step, step + 1)
    best, best_state, history = run.best, run.best_state, run.history
    factor = settings.tv_factor**run.llr_power if run.race else None
    step -= 1
    _, best_step, image, used_maps = best
    assert image is not None and used_maps is not None
    rendered = None
    if settings.render_frames is not None:
        model.load_state_dict(best_state)
        with torch.no_grad():
            rendered = model.render(settings.render_frames)
    return FitResult(
        rendered=rendered,
        image=image,
        maps=used_maps,
        best_step=best_step,
        steps_run=step + 1,
        seconds=time.perf_counter() - start,
        history=history,
        llr_factor=factor,
        race=run.race,
    )


def lowres_maps(kspace: torch.Tensor, mask: torch.Tensor, acs: tuple[int, int]) -> torch.Tensor:
    """Smooth coil maps from the ACS lines alone (a Hann window over ky), unit RSS: ``(C, x, y)``.

    Used to start the learned coil field with ``--coils joint``.
    """
    nt, nc, nx, ny = kspace.shape
    m = mask[:, None].float()
    avg = (kspace * m).sum(0) / m.sum(0).clamp_min(1)
    window = _acs_window(ny, acs, kspace.device)
    wx = torch.hann_window(nx + 2, periodic=False, device=kspace.device)[1:-1]
    coil = ifft2c(avg * window * wx[:, None])
    return coil / torch.sqrt((coil.abs() ** 2).sum(0, keepdim=True) + 1e-12 * float(coil.abs().max() ** 2 + 1e-30))


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
