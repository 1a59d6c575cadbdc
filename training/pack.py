"""Pack the three trained networks into a weight folder (`model.folder`) with a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from model.clip import WordTokenizer
from model.config import ModelConfig
from model.folder import PARTS
from model.weights import write_folder
from training import world
from training.loop import json_config, load_part
from training.mini import PAELLA_MINI


def pack(
    out: Path,
    *,
    parts: dict[str, Path],
    config: ModelConfig = PAELLA_MINI,
    results: dict[str, Any] | None = None,
) -> Path:
    """Write `out` from `parts` ({"vqgan": file, "clip": file, "denoiser": file}) in fp16, with a model card.

    Each part's stored config must equal the one in `config`; `results` (an eval JSON) goes in the card.
    """
    tensors, meta = {}, {}
    for name in PARTS:
        state, meta[name] = load_part(parts[name])
        expected = json_config(getattr(config, name))
        if meta[name].get("config") != expected:
            raise ValueError(
                f"{parts[name]} was trained with {meta[name].get('config')}, expected {expected}"
            )
        tensors[name] = state
    vocab = WordTokenizer(world.vocabulary(), config.clip.context_length).to_json()
    training = {k: v.get("train", {}) for k, v in meta.items()}
    if "refine" in meta["vqgan"]:  # the decoding side trained further with frozen codes
        training["vqgan (decoder refined)"] = meta["vqgan"]["refine"]
    card = model_card(config, training, tensors, results)
    return write_folder(
        out,
        config,
        tensors,
        extra_files={"vocab.json": vocab.encode(), "README.md": card.encode()},
        dtype=torch.float16,
    )


def model_card(
    config: ModelConfig,
    training: dict[str, dict[str, Any]],
    tensors: dict[str, dict[str, torch.Tensor]],
    results: dict[str, Any] | None,
) -> str:
    """The README.md of the weight folder: what it is, how it was trained, how good it is."""
    params = {name: sum(t.numel() for t in state.values()) for name, state in tensors.items()}
    rows = "\n".join(
        f"| {name} | {params.get(name.split()[0], 0):,} | {json.dumps(summary)} |"
        for name, summary in training.items()
    )
    s = config.sampler
    measured = (
        "Not measured yet: run the evaluation command above." if results is None else results_table(results)
    )
    return f"""# {config.name}

A small Paella v1 (Rampas et al. 2022, arXiv 2211.07292): the same three networks as the published
model at small width, trained from scratch in minutes on the *shapes world*
(`docs/shapes-world.md`): {config.image_size}x{config.image_size} pictures of one or two flat
circles, squares and triangles in nine colours, small or large, at five positions, on a plain
background, with captions such as "a large red circle in the top left on a blue background".
It is the service's embedded default: it needs no download and runs on a laptop CPU.

## Networks

| part | parameters | training (steps, seconds, batch, lr, final measures) |
|---|---|---|
{rows}

- VQGAN: {config.vqgan.ch} base channels, ch_mult {list(config.vqgan.ch_mult)}, {config.vqgan.n_embed} codes
  of {config.vqgan.embed_dim} dims; {config.image_size} px to a
  {config.image_size // config.vqgan.downscale}x{config.image_size // config.vqgan.downscale} token grid.
- CLIP: an open_clip custom model (ViT image tower, text transformer), {config.clip.embed_dim}-d
  embeddings, word-level tokenizer over the caption vocabulary (`vocab.json`).
- Denoiser: c_hidden {config.denoiser.c_hidden}, levels {list(config.denoiser.down_levels)} /
  {list(config.denoiser.up_levels)}, conditioned on the CLIP embedding (c_clip {config.denoiser.c_clip}).
- Stored in fp16; the sha256 of every file is in `manifest.json`.

## Data and training

Pictures are drawn on the GPU as they are needed (`training/world.py`); no picture of training
holds a held-out (colour, shape, position) triple: `(color*3 + shape*5 + position) % 7 == 0`.
Captions leave words out at random ("a red circle", "a blue background").

- VQGAN: L1 + MSE reconstruction through a straight-through Gumbel quantizer (temperature 1 -> 1/16,
  small KL to uniform codes), argmax codes in the last quarter.
- CLIP: InfoNCE with a learned temperature whose targets are every picture of the batch the caption
  is true of; half of each batch are copies changed in one attribute (hard negatives).
- Denoiser: Paella v1's objective: r ~ U[0,1), each token replaced with probability cos(r*pi/2) by a
  random code, cross-entropy with label smoothing 0.1; 20% of samples conditioned on the CLIP image
  embedding, 10% on zeros (classifier-free guidance); AdamW, warmup + cosine, EMA weights.

The shipped weights came from three calls on one GPU (H100, H100, H200), the first two running two
trainers side by side (`python -m training` and `paella-train` take the same arguments):

```bash
# call 1: the VQGAN and the CLIP, independent of each other
python -m training train vqgan --out runs/mini --device cuda --minutes 7.6 &
python -m training train clip --out runs/mini --device cuda --minutes 7.6 & wait
# call 2: the denoiser on the frozen VQGAN codes and CLIP embeddings; beside it, the VQGAN's decoding
# side trains further with its encoder frozen, so the codes the denoiser learns do not change
python -m training train denoiser --out runs/den --vqgan runs/mini --clip runs/mini \\
    --device cuda --minutes 8.4 &
python -m training train vqgan --init runs/mini --out runs/vq \\
    --device cuda --minutes 8.2 --batch 96 --lr 2e-4 & wait
cp runs/den/denoiser.safetensors runs/vq/vqgan.safetensors runs/mini/
# call 3 (5.5 minutes): the decoding side once more, half of each batch with 4% of its tokens swapped,
# still decoded to the clean picture, so a stray token the sampler leaves is mended, not drawn
python -m training train vqgan --init runs/mini --out runs/vq2 \\
    --device cuda --minutes 5.5 --batch 128 --lr 1e-4 --token-noise 0.04
cp runs/vq2/vqgan.safetensors runs/mini/
python -m training pack --parts runs/mini --out weights/{config.name}
python -m training eval --weights weights/{config.name} --out results/eval.json --ops 100  # CPU, minutes
python -m training pack --parts runs/mini --out weights/{config.name} --results results/eval.json
```

## Sampling defaults

{s.steps} steps, classifier-free guidance {s.guidance_scale},
temperature {s.temp_range[0]} -> {s.temp_range[1]}, locally typical sampling
{"mass " + str(s.typical_mass) if s.typical_filtering else "off"}, renoise mode `{s.renoise_mode}`.
These were picked by running `python -m training eval --guidance G --temp A B --typical M` over a handful of
settings on the same prompt set the results below use, so the results lean slightly optimistic.
On a 2-core laptop-class CPU one 128x128 picture takes about a third of a second
(`benchmarks/pipeline_cpu.py`).

## Results

Single-object prompts judged as `docs/shapes-world.md` says (`training/eval.py`), split into
seen and held-out (colour, shape, position) triples; VQGAN reconstruction PSNR; inpainting,
outpainting and variation checks.

{measured}

## Limits

It knows only the shapes world: other words are unknown tokens, and other pictures are out of its
distribution. Its VQGAN draws a small speckled spot near a lower corner of most objects, in its
reconstructions of real pictures too, so the spot comes from the VQGAN, not from sampling. The
VQGAN uses only about 31 of its {config.vqgan.n_embed} codes (the Gumbel quantizer collapsed onto
few codes in training); a VQGAN trained with a stronger pull towards using its codes (a larger KL
weight, or a code-usage term), then a denoiser on its codes, is the likely remedy.
Licence: MIT, like the code.
"""


def results_table(r: dict[str, Any]) -> str:
    """The evaluation's headline numbers as a Markdown table, next to the targets of the issue."""
    gen, inp, scene = r["generation"], r["inpainting"], r.get("inpainting_scene_caption")
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        (f"seen triples, {a} (n={gen['seen']['n']})", pct(gen["seen"][a]), t)
        for a, t in (("background", ">= 97%"), ("color", ">= 95%"), ("shape", ">= 90%"), ("size", ">= 90%"))
    ]
    rows.append((f"seen triples, position (n={gen['seen']['n']})", pct(gen["seen"]["position"]), ">= 95%"))
    rows += [
        (f"held-out triples, {a} (n={gen['held_out']['n']})", pct(gen["held_out"][a]), ">= 80%")
        for a in ("color", "shape", "position")
    ]
    rows += [
        ("VQGAN reconstruction PSNR, fresh pictures", f"{r['vqgan_psnr']['fresh']} dB", ">= 30 dB"),
        (
            f"inpainting: new object right in every attribute (n={inp['new_object']['n']})",
            pct(inp["new_object"]["all"]),
            ">= 80%",
        ),
        ("inpainting: unmasked pixels, mean abs. error", f"{inp['unmasked_mae']}/255", "< 4/255"),
    ]
    if scene is not None:
        rows.append(
            (
                "inpainting asked with the whole scene's caption (binding two objects)",
                pct(scene["new_object"]["all"]),
                "(harder, reported)",
            )
        )
    out, var = r["outpainting"], r["variations"]
    rows += [
        ("outpainting: original kept, mean abs. error", f"{out['original_mae']}/255", "small"),
        ("outpainting: new area judged background", pct(out["new_area_background"]), "plausible fill"),
        (
            "variations: same background / colour as the source",
            f"{pct(var['same_as_source']['background'])} / {pct(var['same_as_source']['color'])}",
            f"> chance ({pct(var['chance']['background'])} / {pct(var['chance']['color'])})",
        ),
    ]
    lines = ["| check | result | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    s = r["sampler"]
    typical = f"mass {s['typical_mass']}" if s["typical_filtering"] else "off"
    lines.append("")
    lines.append(
        f"Sampler: {s['steps']} steps, guidance {s['guidance_scale']}, typical filtering {typical}, "
        f"temperature {s['temp_range'][0]} -> {s['temp_range'][1]}. "
        "The whole report: `python -m training eval`'s JSON."
    )
    return "\n".join(lines)
