"""What every trainer shares: device set-up, a step/time budget with its LR schedule, logs, checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from model.weights import load_module


def setup_device(name: str) -> torch.device:
    """The training device, with TF32 matmuls and cuDNN autotuning on CUDA."""
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; full precision elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_step(
    optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter], loss: torch.Tensor
) -> None:
    """Backpropagate `loss`, clip the gradients' global norm to 1 and step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(params), 1.0)
    optimizer.step()


class Run:
    """A training run's budget (steps and/or minutes), LR schedule, progress bar and JSONL loss log.

    Progress is the larger of steps done / steps and time spent / minutes, so the warmup-then-cosine
    schedule spans the budget whichever ends first; iteration stops when progress reaches 1.
    """

    def __init__(
        self,
        name: str,
        out: Path,
        *,
        steps: int | None,
        minutes: float | None,
        warmup: float = 0.03,
        final_lr: float = 0.05,
        log_every: int = 25,
    ):
        if steps is None and minutes is None:
            raise ValueError("give a step budget, a time budget or both")
        self.name, self.out = name, out
        self.steps, self.seconds = steps, None if minutes is None else minutes * 60
        self.warmup, self.final_lr, self.log_every = warmup, final_lr, log_every
        self.step, self.progress = 0, 0.0
        out.mkdir(parents=True, exist_ok=True)
        self.log_path = out / f"{name}.log.jsonl"
        self.log_path.write_text("")
        self._start = time.monotonic()
        self._bar = tqdm(total=1000, desc=name, unit="‰", dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _progress(self) -> float:
        done = 0.0 if self.steps is None else self.step / self.steps
        if self.seconds is not None:
            done = max(done, self.elapsed / self.seconds)
        return min(done, 1.0)

    def __iter__(self) -> Iterator[int]:
        self._start = time.monotonic()
        while True:
            self.progress = self._progress()
            if self.progress >= 1.0:
                break
            yield self.step
            self.step += 1
        self._bar.close()

    def lr_factor(self) -> float:
        """Linear warmup, then cosine decay to `final_lr` of the peak, over the budget's progress."""
        p = self.progress
        if p < self.warmup:
            return max(p / self.warmup, 1e-3)
        t = (p - self.warmup) / (1 - self.warmup)
        return self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * t))

    def set_lr(self, optimizer: torch.optim.Optimizer, peak: float) -> float:
        lr = peak * self.lr_factor()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def log(self, **metrics: float | torch.Tensor) -> None:
        """Every `log_every` steps: one JSON line and the progress bar's postfix (syncs the device)."""
        if self.step % self.log_every:
            return
        row = {"step": self.step, "time": round(self.elapsed, 2), "progress": round(self.progress, 4)}
        row |= {
            k: round(float(v.detach() if isinstance(v, torch.Tensor) else v), 6) for k, v in metrics.items()
        }
        with self.log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("time", "progress")})
        self._bar.update(int(self.progress * 1000) - self._bar.n)

    def summary(self, device: torch.device) -> dict[str, Any]:
        """Steps, seconds and the card, for the model card."""
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        return {"steps": self.step, "seconds": round(self.elapsed, 1), "device": card}


def save_part(path: Path, module: nn.Module, meta: dict[str, Any]) -> None:
    """One network as a single fp16 safetensors file, with JSON metadata (config, training summary)."""
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in module.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in meta.items()})


def json_config(config: Any) -> Any:
    """A config dataclass as it reads back from JSON metadata (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def load_frozen_part(path: Path, module: nn.Module, config: Any) -> dict[str, Any]:
    """Load a `save_part` file into `module`, frozen, after checking its config; returns its metadata."""
    state, meta = load_part(path)
    if meta.get("config") != json_config(config):
        raise ValueError(f"{path} was trained with {meta.get('config')}, expected {json_config(config)}")
    load_module(module, state)
    module.eval().requires_grad_(False)
    return meta


def load_part(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The fp32 state dict and the metadata of a `save_part` file."""
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    return state, meta
