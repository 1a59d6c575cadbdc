"""Tensors of our weight folders (format in `model.folder`), and the published Paella v1 checkpoints.

Nothing here touches the network: every path is a local file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from model.clip import ClipEncoder, WordTokenizer
from model.config import PAELLA_V1, DenoiserConfig, ModelConfig, VQGANConfig
from model.denoiser import Denoiser
from model.folder import (
    CONFIG,
    OPTIONAL_PARTS,
    PARTS,
    check_extra_names,
    part_file,
    parts_in,
    read_config,
    verify,
    write_manifest,
)
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
        tensors: state dicts by part ("denoiser", "vqgan", "clip", and optionally "image_denoiser"), each
            saved as `<part>.safetensors`.
        extra_files: more files by name, e.g. {"vocab.json": ..., "README.md": ...}.
        dtype: if given, floating-point tensors are cast to it; others are kept as they are.

    Returns:
        The folder's path.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    unknown = set(tensors) - {*PARTS, *OPTIONAL_PARTS}
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}; expected some of {(*PARTS, *OPTIONAL_PARTS)}")
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


def read_folder(
    path: str | Path, parts: Iterable[str] | None = None
) -> tuple[ModelConfig, dict[str, StateDict]]:
    """The config and the state dicts of `parts` (None: every part the folder holds), after checking each
    file read against the manifest (a whole read checks the extra files too)."""
    path = Path(path)
    if parts is None:
        parts = parts_in(path)
        verify(path)
    else:
        parts = tuple(parts)
        verify(path, [part_file(p) for p in parts])
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


def load_official_denoiser(path: str | Path, *, allow_pickle: bool = False, **config: Any) -> Denoiser:
    """The published `DenoiseUNet` (a torch.save'd plain state_dict) as a frozen `Denoiser` in eval mode.

    Args:
        path: the checkpoint, e.g. `model_600000.pt` (text) or `model_50000_img.pt` (image-conditioned).
        allow_pickle: also read a checkpoint holding pickled objects besides tensors (see `_torch_load`).
        **config: constructor keywords of the published class (num_labels, c_hidden, c_clip, c_r,
            down_levels, up_levels); v1's values by default.
    """
    state = _torch_load(path, allow_pickle=allow_pickle)
    with torch.device("meta"):
        model = Denoiser(DenoiserConfig.from_dict(config))
    return _frozen(_load_strict(path, model, state))


def load_official_vqgan(path: str | Path, *, allow_pickle: bool = False, **config: Any) -> VQGAN:
    """The published Gumbel VQGAN (a dict with 'state_dict') as a frozen `VQGAN` in eval mode.

    Training-only `loss.*` entries are ignored.

    Args:
        path: the checkpoint, e.g. `vqgan.gumbelf8-sber.model.ckpt`.
        allow_pickle: also read a checkpoint holding pickled objects besides tensors, as Lightning
            checkpoints do (see `_torch_load`).
        **config: taming-transformers' ddconfig keywords (ch, ch_mult, num_res_blocks,
            attn_resolutions, z_channels, embed_dim, n_embed, resolution, ...); v1's by default.
    """
    checkpoint = _torch_load(path, allow_pickle=allow_pickle)
    if not isinstance(checkpoint.get("state_dict"), Mapping):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' entry")
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss.")}
    with torch.device("meta"):
        model = VQGAN(VQGANConfig.from_dict(config))
    return _frozen(_load_strict(path, model, state))


def convert_official(
    denoiser: Path,
    vqgan: Path,
    clip: Path,
    out: Path,
    *,
    image_denoiser: Path | None = None,
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
    progress: bool = False,
) -> Path:
    """Turn the published v1 files into a weight folder with config PAELLA_V1.

    Args:
        denoiser: Paella's `model_600000.pt`.
        vqgan: ruDALL-E's `vqgan.gumbelf8-sber.model.ckpt`.
        clip: OpenCLIP ViT-g-14's `open_clip_pytorch_model.bin` (a plain state_dict) or, from the model
            hub's layout, `open_clip_model.safetensors`; stored as is.
        out: the folder to write.
        image_denoiser: the denoiser fine-tuned on CLIP image embeddings (`model_50000_img.pt`), which
            then runs the variations; None leaves it out.
        dtype: floating-point tensors are stored in this type.
        allow_pickle: read checkpoints that hold pickled objects besides tensors (a Lightning `.ckpt`);
            this runs code from the files, so only for files from a source you trust.
        progress: show a progress bar on stderr.

    Returns:
        The folder's path.
    """
    config = PAELLA_V1
    den = dataclasses.asdict(config.denoiser)
    readers: dict[str, Callable[[], StateDict]] = {
        "denoiser": lambda: load_official_denoiser(denoiser, allow_pickle=allow_pickle, **den).state_dict(),
        "vqgan": lambda: load_official_vqgan(
            vqgan, allow_pickle=allow_pickle, **dataclasses.asdict(config.vqgan)
        ).state_dict(),
        "clip": lambda: _clip_state(clip, allow_pickle=allow_pickle),
    }
    sources = {"denoiser": denoiser, "vqgan": vqgan, "clip": clip}
    if image_denoiser is not None:
        readers["image_denoiser"] = lambda: load_official_denoiser(
            image_denoiser, allow_pickle=allow_pickle, **den
        ).state_dict()
        sources["image_denoiser"] = image_denoiser
    tensors = {}
    with tqdm(total=len(readers) + 1, desc="convert-weights", unit="step", disable=not progress) as bar:
        for part, read in readers.items():
            bar.set_postfix_str(f"reading {Path(sources[part]).name}")
            tensors[part] = read()
            bar.update()
        bar.set_postfix_str(f"writing {out}")
        files = "\n".join(f"- {part}: `{Path(s).name}` ({_SOURCES[part]})" for part, s in sources.items())
        card = _MODEL_CARD.format(files=files).encode()
        folder = write_folder(out, config, tensors, extra_files={"README.md": card}, dtype=dtype)
        bar.update()
    return folder


_SOURCES = {
    "denoiser": "Paella v1 `DenoiseUNet`",
    "vqgan": "ruDALL-E's f8 Gumbel VQGAN",
    "clip": "OpenCLIP ViT-g-14, laion2b_s12b_b42k",
    "image_denoiser": "Paella v1 `DenoiseUNet` fine-tuned on CLIP image embeddings; runs the variations",
}
_MODEL_CARD = """# paella-v1

Paella v1 (Rampas et al. 2022, arXiv 2211.07292), converted from the published files:

{files}

The tensors are unchanged apart from their storage type; see each source for its licence.
"""


def _torch_load(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """A checkpoint of plain tensors and containers, memory-mapped when its format allows.

    A checkpoint that also pickles objects (a Lightning `.ckpt`: callbacks, hyperparameters) is refused
    unless `allow_pickle`; then it is unpickled, with a warning since that runs code from the file, and
    objects whose classes are not installed here become inert stand-ins.
    """
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # files in the legacy (pre-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_pickle:
            raise ValueError(
                f"{path}: holds pickled objects besides tensors and plain containers; not loaded. Reading "
                "it runs code from the file: allow it (--allow-pickle) only for a file you trust"
            ) from e
        warnings.warn(f"{path}: unpickling its objects (allow_pickle) runs code from the file", stacklevel=3)
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TOLERANT_PICKLE)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")
    return dict(obj)


def _clip_state(path: str | Path, *, allow_pickle: bool) -> StateDict:
    """OpenCLIP's state dict from its `.bin` (torch.save) or the model hub's `.safetensors`."""
    state = (
        load_file(path)
        if Path(path).suffix == ".safetensors"
        else _torch_load(path, allow_pickle=allow_pickle)
    )
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a plain state_dict of tensors")
    return state


class _StandIn(dict[Any, Any]):
    """An unpickled object whose class is not installed here: its state kept, no code of it run."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self["__state__"] = state


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_StandIn,), {"__module__": module})


_TOLERANT_PICKLE = SimpleNamespace(
    __name__="tolerant_pickle",
    Unpickler=_TolerantUnpickler,
    load=lambda file, **kwargs: _TolerantUnpickler(file, **kwargs).load(),
)


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
