"""The settings of ``recon`` in one dataclass: the CLI reads its defaults from here (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .solver import FitSettings


class Pattern(str, Enum):
    """How fully sampled k-space is undersampled by ``--accel``: the CMRxRecon 2023 rule (the same ky lines in
    every frame), or one of CMRxRecon 2024's k-t patterns (different samples in every frame)."""

    uniform = "uniform"  # the central ACS lines + every R-th line from the first, in every frame
    kt_uniform = "ktUniform"  # every R-th line, shifted by one line from frame to frame, + ACS
    kt_gaussian = "ktGaussian"  # random lines per frame, Gaussian density over ky, + ACS
    kt_radial = "ktRadial"  # radial spokes, rotated by the golden angle from frame to frame, + an ACS square


# Under k-t sampling the frames' different lines fill each other's gaps: a locally low-rank term over the frames,
# relaxed where the ACS cine moves, started stronger and lowered faster. With the same lines in every frame,
# aliasing is the same in every frame and the low-rank term keeps it, except at low acceleration (R <= 4), where
# the aliasing is weak and the term's denoising pays (benchmark: docs/recon.md). There the coils alone unfold most
# of the aliasing, and the weaker components of their sensitivities, which a compression to 6 virtual coils drops,
# matter: 8 virtual coils. Through the normal matrices of a fixed-line mask a step costs nearly the same whatever
# the coil count, so above R = 4 every coil is kept (0: no compression; on tuning draws at R = 8 and 10 all 10
# coils against 6 virtual ones: least-squares-scaled full image +0.06 to +0.57 dB on all 12 fits). Under k-t masks
# the cost of a step grows with the coils: 6 virtual coils.
KT_SETTINGS = {"llr": 0.1, "acs_motion": 0.03, "tv_factor": 0.1, "virtual_coils": 6}
FIXED_LINE_SETTINGS = {"llr": 0.0, "acs_motion": 0.0, "tv_factor": 0.3, "virtual_coils": 0}
FIXED_LINE_LOW_ACCEL = 4.0  # fixed-line masks at this nominal acceleration or lower take FIXED_LINE_LOW_SETTINGS
FIXED_LINE_LOW_SETTINGS = {**FIXED_LINE_SETTINGS, "llr": 0.1, "virtual_coils": 8}
# The learning rate stays constant (the fits are still improving at their last weights when the held-out rule or
# the step cap ends them), except when --frames renders frames between the acquired ones: a rate falling 3x
# leaves the field between them steadier (docs/recon.md).
LR_DECAY = 1.0
FRAMES_LR_DECAY = 1 / 3


@dataclass
class ReconConfig:
    """Every setting of ``recon``; the CLI reads its defaults from here."""

    method: str = "inr"  # inr | zerofill
    key: str | None = None
    slices: list[int] | None = None
    accel: int | None = None
    acs: int = 24
    pattern: Pattern = Pattern.uniform
    mask: str | None = None
    ref: str | None = None
    ref_key: str | None = None
    encoding: str = "pyramid"  # pyramid | hash | fourier | pixel
    coils: str = "espirit"  # espirit | joint
    # compress the coils to this many virtual coils first (0: keep every coil; None: chosen by the mask, as llr)
    virtual_coils: int | None = None
    loss: str = "l2"  # l2 | huber
    tv_space: float = 0.002
    tv_time: float = 0.004
    # None: chosen by the mask (KT_SETTINGS when the lines change from frame to frame, FIXED_LINE_SETTINGS else)
    llr: float | None = None  # weight of the locally low-rank term (0: off)
    llr_block: int = 8
    llr_every: int = 2  # the low-rank term on every n-th step, n times as strong (fewer eigendecompositions)
    acs_motion: float | None = None  # temporal terms weighted 1 / (1 + m / acs_motion) per pixel (0: uniform)
    tv_stages: int = 3  # times the regularisation weights may be lowered when the held-out error settles (0: fixed)
    tv_factor: float | None = None  # by this factor each time
    dc: bool = True
    frames: int | None = None  # frames rendered over the cardiac cycle (None: the acquired ones)
    steps: int = 420
    lr: float = 8e-2
    # the rate falls exponentially to lr * lr_decay at the step cap (1: constant; None: LR_DECAY, or
    # FRAMES_LR_DECAY with frames)
    lr_decay: float | None = None
    holdout: float = 0.05
    patience: int = 30
    settle_tol: float = 0.005  # settled: the best held-out error fell by at most this share over `patience` steps
    weight_ramp: int = 0  # steps over which a lowering of the weights is spread, geometrically (0: at once)
    # a second lowering factor for the low-rank weight alone, raced against --tv-factor on the held-out error from
    # the first lowering for race_steps steps (0: off, the low-rank weight is lowered with the TV weights)
    llr_race: float = 0.0
    race_steps: int = 40
    n_levels: int = 8
    features_per_level: int = 2
    hidden: int = 64
    n_hidden_layers: int = 1
    espirit_kernel: int = 6
    espirit_threshold: float = 0.02
    device: str = "auto"
    seed: int = 0
    quiet: bool = False
    ranking: bool = False  # the challenge's img4ranking will be written: its slices must be reconstructed

    def validate(self) -> None:
        choices = {
            "method": ("inr", "zerofill"),
            "encoding": ("pyramid", "hash", "fourier", "pixel"),
            "coils": ("espirit", "joint"),
            "loss": ("l2", "huber"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.accel is not None and self.accel < 1:
            raise InputError(f"--accel must be >= 1, got {self.accel}")
        try:
            self.pattern = Pattern(self.pattern)
        except ValueError:
            allowed = ", ".join(p.value for p in Pattern)
            raise InputError(f"--pattern must be one of {allowed}, got {self.pattern!r}") from None
        if self.frames is not None and self.frames < 1:
            raise InputError(f"--frames must be >= 1, got {self.frames}")
        if self.frames is not None and self.encoding == "fourier":
            raise InputError("--frames needs --encoding pyramid, hash or pixel (a time axis periodic over the cycle)")
        if self.frames is not None and self.ranking:
            raise InputError("--save-mat writes the acquired frames (img4ranking): leave out --frames")
        if self.steps < 1:
            raise InputError(f"--steps must be >= 1, got {self.steps}")
        if self.virtual_coils is not None and self.virtual_coils < 0:
            raise InputError(f"--virtual-coils must be >= 0 (0: keep every coil), got {self.virtual_coils}")
        if self.tv_stages < 0 or (self.tv_factor is not None and not 0 < self.tv_factor < 1):
            raise InputError("--tv-stages must be >= 0 and --tv-factor in (0, 1)")
        if self.lr_decay is not None and not 0 < self.lr_decay <= 1:
            raise InputError(f"--lr-decay must be in (0, 1] (1: a constant rate), got {self.lr_decay}")
        if self.weight_ramp < 0:
            raise InputError(f"--weight-ramp must be >= 0 (0: lower the weights at once), got {self.weight_ramp}")
        if not 0 <= self.settle_tol < 1:
            raise InputError(f"--settle-tol must be in [0, 1), got {self.settle_tol}")
        if not 0 <= self.holdout < 0.5:
            raise InputError(f"--holdout must be in [0, 0.5), got {self.holdout}")
        if self.tv_space < 0 or self.tv_time < 0 or (self.llr or 0) < 0:
            raise InputError("--tv-space, --tv-time and --llr must be >= 0")
        if (self.acs_motion or 0) < 0:
            raise InputError(f"--acs-motion must be >= 0 (0: one temporal weight everywhere), got {self.acs_motion}")
        if self.llr_block < 2:
            raise InputError(f"the low-rank block size must be >= 2, got {self.llr_block}")
        if not 0 <= self.llr_race < 1 or self.race_steps < 1:
            got = f"{self.llr_race}, {self.race_steps}"
            raise InputError(f"--llr-race must be in [0, 1) and --race-steps >= 1, got {got}")
        if self.llr_every < 1:
            raise InputError(f"--llr-every must be >= 1, got {self.llr_every}")

    def for_mask(self, kt: bool, accel: float | None = None) -> ReconConfig:
        """These settings with each one left as None taken from ``KT_SETTINGS`` (``kt``: the sampled lines change
        from frame to frame), ``FIXED_LINE_LOW_SETTINGS`` (the same lines in every frame, nominal acceleration
        ``accel`` at most ``FIXED_LINE_LOW_ACCEL``) or ``FIXED_LINE_SETTINGS``.

        >>> ReconConfig().for_mask(kt=False, accel=4).llr, ReconConfig().for_mask(kt=False, accel=8).llr
        (0.1, 0.0)
        >>> [ReconConfig().for_mask(kt=False, accel=a).virtual_coils for a in (4, 8)]  # 0: every coil kept
        [8, 0]
        >>> ReconConfig().for_mask(kt=True).virtual_coils
        6
        """
        if kt:
            chosen = KT_SETTINGS
        elif accel is not None and accel <= FIXED_LINE_LOW_ACCEL:
            chosen = FIXED_LINE_LOW_SETTINGS
        else:
            chosen = FIXED_LINE_SETTINGS
        return replace(self, **{k: v for k, v in chosen.items() if getattr(self, k) is None})

    def decay(self) -> float:
        """The learning rate's fall over the steps: ``lr_decay`` where given, else constant, except with ``frames``.

        >>> ReconConfig().decay(), ReconConfig(frames=36).decay() == FRAMES_LR_DECAY, ReconConfig(lr_decay=0.5).decay()
        (1.0, True, 0.5)
        """
        if self.lr_decay is not None:
            return self.lr_decay
        return FRAMES_LR_DECAY if self.frames is not None else LR_DECAY

    def fit_settings(self) -> FitSettings:
        from .solver import FitSettings

        if self.llr is None or self.tv_factor is None:
            raise ValueError("call for_mask() first: llr and tv_factor depend on the mask")
        return FitSettings(
            encoding=self.encoding,
            n_levels=self.n_levels,
            features_per_level=self.features_per_level,
            hidden=self.hidden,
            n_hidden_layers=self.n_hidden_layers,
            loss=self.loss,
            tv_space=self.tv_space,
            tv_time=self.tv_time,
            llr=self.llr,
            llr_block=self.llr_block,
            llr_every=self.llr_every,
            steps=self.steps,
            lr=self.lr,
            lr_final=self.lr * self.decay(),
            patience=self.patience,
            settle_tol=self.settle_tol,
            weight_ramp=self.weight_ramp,
            llr_race=(self.llr_race,) if self.llr_race else (),
            race_steps=self.race_steps,
            tv_stages=self.tv_stages,
            tv_factor=self.tv_factor,
            joint_coils=self.coils == "joint",
            render_frames=self.frames,
        )
