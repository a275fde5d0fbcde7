"""Adam through PyTorch's fused kernel, without ``torch.optim``'s machinery.

``torch.optim``'s optimizers import PyTorch's compiler stack (``torch._dynamo``) the first time one is made or
stepped: about 2.3 s on a 2-core CPU, paid by every process before its first training step. :class:`FusedAdam`
keeps the same state as ``torch.optim.Adam(fused=True)`` (first and second moments, a float32 step count per
parameter) and calls the same kernel, so it gives the same numbers, and imports nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FusedAdam:
    """Adam (no weight decay, no AMSGrad) on parameters of one device with the fused kernel; :attr:`lr` may be
    changed between steps.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = FusedAdam([w], lr=0.1)
    >>> (w**2).sum().backward(); opt.step()
    >>> w.detach()
    tensor([ 0.9000, -1.9000])
    """

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = list(params)
        if len({p.device for p in self.params}) > 1:
            raise ValueError("FusedAdam takes parameters on one device")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def state(self) -> dict:
        """A copy of the moments, step counts and rate (:meth:`load_state` puts it back)."""
        return {
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [m.clone() for m in self.exp_avg_sq],
            "steps": [n.clone() for n in self.steps],
            "lr": self.lr,
        }

    def load_state(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)
        self.lr = state["lr"]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],
            [self.exp_avg[i] for i in live],
            [self.exp_avg_sq[i] for i in live],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
        )
