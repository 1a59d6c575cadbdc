"""Tensors of our weight folders (format in `model.folder`), and the published Paella v1 checkpoints.

Nothing here touches the network: every path is a local file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from model.clip import ClipEncoder, WordTokenizer
from model.config import PAELLA_V1, DenoiserConfig, ModelConfig, VQGANConfig
from model.denoiser import Denoiser
from model.folder import CONFIG, PARTS, check_extra_names, part_file, read_config, verify, write_manifest
from model.vqgan import VQGAN

StateDict = dict[str, Tensor]
M = TypeVar("M", bound=nn.Module)


def write_folder(
    path: str | Path,
    config: ModelConfig,
    tensors: Mapping[str, Mapping[str, Tensor]],
    *,
    extra_files: Mapping[str, bytes] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a weight folder.

    Args:
        path: the folder, created if needed.
        config: stored as config.json.
        tensors: state dicts by part ("denoiser", "vqgan", "clip"), each saved as `<part>.safetensors`.
        extra_files: more files by name, e.g. {"vocab.json": ..., "README.md": ...}.
        dtype: if given, floating-point tensors are cast to it; others are kept as they are.

    Returns:
        The folder's path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    unknown = set(tensors) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; expected some of {PARTS}")
    extra = dict(extra_files or {})
    check_extra_names(extra)
    written = [CONFIG]
    (path / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    for part, state in tensors.items():
        save_file(_storable(state, dtype), path / part_file(part), metadata={"format": "pt"})
        written.append(part_file(part))
    for name, data in extra.items():
        (path / name).write_bytes(data)
        written.append(name)
    write_manifest(path, written)
    return path


def read_folder(path: str | Path, parts: Iterable[str] = PARTS) -> tuple[ModelConfig, dict[str, StateDict]]:
    """The config and the state dicts of `parts`, after checking each file read against the manifest
    (a whole read checks the extra files too)."""
    path = Path(path)
    parts = tuple(parts)
    verify(path, None if set(parts) == set(PARTS) else [part_file(p) for p in parts])
    return read_config(path), {part: load_file(path / part_file(part)) for part in parts}


def write_random_folder(
    path: str | Path,
    config: ModelConfig,
    vocabulary: Sequence[str] | None = None,
    seed: int = 0,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Path:
    """A weight folder of `config` with seeded random weights (fan-in scaled, so every input matters):
    the cost of a model without its trained weights, for tests and benchmarks. `device` is where the
    networks are built (a GPU builds full-size ones in seconds); `dtype` is the stored type."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        clip = ClipEncoder(config.clip, vocabulary)
        modules = {"denoiser": Denoiser(config.denoiser), "vqgan": VQGAN(config.vqgan), "clip": clip.model}
    g = torch.Generator(device=device).manual_seed(seed)
    tensors = {}
    for part, module in modules.items():
        state = {}
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                scale = math.sqrt(math.prod(t.shape[1:]) if t.dim() > 1 else 1)
                t = torch.randn(t.shape, generator=g, device=t.device) / scale
            state[name] = t
        tensors[part] = state
    extra = {} if vocabulary is None else {"vocab.json": WordTokenizer(vocabulary).to_json().encode()}
    return write_folder(path, config, tensors, extra_files=extra, dtype=dtype)


def load_module(module: M, state: Mapping[str, Tensor], *, dtype: torch.dtype | None = None) -> M:
    """Load `state` strictly into `module` (which may live on the meta device), in `dtype` if given."""
    meta = any(t.is_meta for t in module.state_dict().values())
    if dtype is not None and not meta:
        module.to(dtype)
    target = dtype or next(module.parameters()).dtype
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=meta)
    return module


def load_official_denoiser(path: str | Path, **config: Any) -> Denoiser:
    """The published `DenoiseUNet` (a torch.save'd plain state_dict) as a frozen `Denoiser` in eval mode.

    Args:
        path: the checkpoint, e.g. `model_600000.pt`.
        **config: constructor keywords of the published class (num_labels, c_hidden, c_clip, c_r,
            down_levels, up_levels); v1's values by default.
    """
    state = _torch_load(path)
    with torch.device("meta"):
        model = Denoiser(DenoiserConfig.from_dict(config))
    return _frozen(_load_strict(path, model, state))


def load_official_vqgan(path: str | Path, **config: Any) -> VQGAN:
    """The published Gumbel VQGAN (a dict with 'state_dict') as a frozen `VQGAN` in eval mode.

    Training-only `loss.*` entries are ignored.

    Args:
        path: the checkpoint, e.g. `vqgan.gumbelf8-sber.model.ckpt`.
        **config: taming-transformers' ddconfig keywords (ch, ch_mult, num_res_blocks,
            attn_resolutions, z_channels, embed_dim, n_embed, resolution, ...); v1's by default.
    """
    checkpoint = _torch_load(path)
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' entry")
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss.")}
    with torch.device("meta"):
        model = VQGAN(VQGANConfig.from_dict(config))
    return _frozen(_load_strict(path, model, state))


def convert_official(
    denoiser: Path, vqgan: Path, clip: Path, out: Path, *, dtype: torch.dtype = torch.float32
) -> Path:
    """Turn the three published v1 files into a weight folder with config PAELLA_V1.

    Args:
        denoiser: Paella's `model_600000.pt`.
        vqgan: ruDALL-E's `vqgan.gumbelf8-sber.model.ckpt`.
        clip: OpenCLIP ViT-g-14's `open_clip_pytorch_model.bin` (a plain state_dict, stored as is).
        out: the folder to write.
        dtype: floating-point tensors are stored in this type.

    Returns:
        The folder's path.
    """
    clip_state = _torch_load(clip)
    if not all(isinstance(v, Tensor) for v in clip_state.values()):
        raise ValueError(f"{clip}: expected a plain state_dict of tensors")
    config = PAELLA_V1
    tensors = {
        "denoiser": load_official_denoiser(denoiser, **dataclasses.asdict(config.denoiser)).state_dict(),
        "vqgan": load_official_vqgan(vqgan, **dataclasses.asdict(config.vqgan)).state_dict(),
        "clip": clip_state,
    }
    card = _MODEL_CARD.format(denoiser=Path(denoiser).name, vqgan=Path(vqgan).name, clip=Path(clip).name)
    return write_folder(out, config, tensors, extra_files={"README.md": card.encode()}, dtype=dtype)


_MODEL_CARD = """# paella-v1

Paella v1 (Rampas et al. 2022, arXiv 2211.07292), converted from the published files:

- denoiser: `{denoiser}` (Paella v1 `DenoiseUNet`)
- vqgan: `{vqgan}` (ruDALL-E's f8 Gumbel VQGAN)
- clip: `{clip}` (OpenCLIP ViT-g-14, laion2b_s12b_b42k)

The tensors are unchanged apart from their storage type; see each source for its licence.
"""


def _torch_load(path: str | Path) -> dict[str, Any]:
    """A checkpoint of plain tensors and containers, memory-mapped when its format allows."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # files in the legacy (pre-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: holds more than tensors and plain containers; not loaded") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")
    return dict(obj)


def _load_strict(path: str | Path, module: M, state: Mapping[str, Tensor]) -> M:
    try:
        return load_module(module, state)
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        raise ValueError(f"{path}: does not match {type(module).__name__}: {e}") from e


def _frozen(module: M) -> M:
    module.eval().requires_grad_(False)
    return module


def _storable(state: Mapping[str, Tensor], dtype: torch.dtype | None) -> StateDict:
    """Contiguous CPU tensors that each own their memory, as safetensors requires."""
    out: StateDict = {}
    seen: set[int] = set()
    for name, t in state.items():
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.contiguous()
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.nbytes() != t.nbytes:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out
