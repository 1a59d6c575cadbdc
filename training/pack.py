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

NORMS = {
    "group": "GroupNorm(32), as in v1",
    "channel": "per position over the channels (`ChannelNorm`), not v1's GroupNorm, which drew a droplet "
    "spot on these flat pictures",
}


# What the recipe's model gets wrong beyond the results table, seen in `docs/samples.png` and in the eval's
# pictures of the shipped weights (checked again whenever the weights are retrained).
KNOWN_LIMITS = """Seen beyond the table, in `docs/samples.png` and the evaluation's pictures:
- Outpainting draws shapes into the new area though the caption names only the background (the
  outpainting row's clean pixels): training never shows an extension that must stay empty, nor
  canvases other than 128x128, 256x128 and 128x256.
- Structural edits at low strength (0.3) can leave dark blots where the old object's tokens and the
  new caption disagree; from 0.6 on the edit is clean.
- The middle frames of an interpolation mix the two pictures (both objects, half drawn) rather than
  morph one into the other.
- A few single-object pictures still carry a blot (the artefact row's maximum), though the median and
  90th percentile are zero."""


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
  {config.image_size // config.vqgan.downscale}x{config.image_size // config.vqgan.downscale} token grid;
  normalisation {NORMS[config.vqgan.norm]}.
- CLIP: an open_clip custom model (ViT image tower, text transformer), {config.clip.embed_dim}-d
  embeddings, word-level tokenizer over the caption vocabulary (`vocab.json`).
- Denoiser: c_hidden {config.denoiser.c_hidden}, levels {list(config.denoiser.down_levels)} /
  {list(config.denoiser.up_levels)}, conditioned on the CLIP embedding (c_clip {config.denoiser.c_clip}).
- Stored in fp16; the sha256 of every file is in `manifest.json`.

## Data and training

Pictures are drawn on the GPU as they are needed (`training/world.py`); no picture of training
holds a held-out (colour, shape, position) triple: `(color*3 + shape*5 + position) % 7 == 0`.
Captions leave words out at random ("a red circle", "a blue background").

- VQGAN: L1 + MSE reconstruction through finite scalar quantization (Mentzer et al. 2023): five
  feature dimensions, each bounded and rounded to four levels, 4^5 = {config.vqgan.n_embed} codes, so no
  code goes unused for want of gradient (a Gumbel quantizer collapsed onto about 30 codes here). It is
  stored exactly in Paella v1's Gumbel layout (`training/fsq.py`: code logits by a 1x1 conv, argmax,
  codebook lookup), so the published VQGAN and this one load through the same code. From halfway
  through its training, half of each batch has 4% of its tokens swapped for others of the batch and is
  still decoded to the clean picture, so a stray token the sampler leaves is mended, not drawn.
- CLIP: InfoNCE with a learned temperature whose targets are every picture of the batch the caption
  is true of; half of each batch are hard negatives: copies changed in one attribute or, for half of
  the two-object scenes, with the colour, shape or size of the two objects exchanged (the same words,
  bound the other way round).
- Denoiser: Paella v1's objective: r ~ U[0,1), each token replaced with probability cos(r*pi/2) by a
  random code, cross-entropy with label smoothing 0.1; 60% two-object scenes; 20% of samples
  conditioned on the CLIP image embedding, 10% on zeros (classifier-free guidance); 25% noised only
  inside a random box, the rest held clean as inpainting holds it; and with every batch, canvases
  twice as wide or tall holding two scenes on one background, each half conditioned on its own
  caption through a spatial condition map, as a composition asks. AdamW, warmup + cosine, EMA weights.

The shipped weights came from the commands below on one GPU; `scripts/train-mini.sh` runs them
(`python -m training` and `paella-train` take the same arguments). Each GPU stage is one call of
under ten minutes; they train for 8.8, 9.0 and 4.6 minutes, and on one H100 the three calls ran 554,
554 and 288 s: the session's 30 minutes of device time held them, the machine's start and two refused
tries for a machine (28.5 minutes in all):

```bash
scripts/train-mini.sh codes runs/mini     # VQGAN (FSQ, token noise from halfway) + CLIP side by side
scripts/train-mini.sh denoiser runs/mini  # the denoiser, alone on the GPU
scripts/train-mini.sh more runs/mini      # the denoiser further, from where it stopped
scripts/train-mini.sh pack runs/mini      # CPU: pack, `python -m training eval --ops 100`, pack with results
```

## Sampling defaults

{s.steps} steps, classifier-free guidance {s.guidance_scale},
temperature {s.temp_range[0]} -> {s.temp_range[1]}, locally typical sampling
{"mass " + str(s.typical_mass) if s.typical_filtering else "off"}, renoise mode `{s.renoise_mode}`.
They were picked with `python -m training eval --seed 1000 --guidance G --typical M` over a handful of
settings: prompts and noise seeds apart from those of the results below (seed 0).
On a 2-core laptop-class CPU one 128x128 picture takes about a quarter of a second
(`benchmarks/pipeline_cpu.py`).

![samples](../../docs/samples.png) (`docs/samples.py` draws it)

## Results

Prompts judged as `docs/shapes-world.md` says (`training/eval.py`): single objects, split into
seen and held-out (colour, shape, position) triples; two-object captions; compositions; inpainting,
outpainting and variations; the VQGAN's reconstructions.

{measured}

## Limits

It knows only the shapes world: other words are unknown tokens, and other pictures are out of its
distribution. Licence: MIT, like the code.

{KNOWN_LIMITS}
"""


def spread(counts: dict[str, Any]) -> str:
    """An eval `spread` as "median / p90 / max"."""
    return f"{counts['median']:g} / {counts['p90']:g} / {counts['max']}"


def results_table(r: dict[str, Any]) -> str:
    """The evaluation's headline numbers as a Markdown table, next to paella-mini 2's targets and whether
    each is met."""
    gen, inp = r["generation"], r["inpainting"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    attrs = ("background", "color", "shape", "size", "position")

    def each(split: dict[str, Any]) -> str:
        return " / ".join(pct(split[a]) for a in attrs) + f" (all right: {pct(split['all'])})"

    def every(split: dict[str, Any], floor: float) -> bool:
        return all(split[a] >= floor for a in attrs)

    rows: list[tuple[str, str, str, bool | None]] = [
        (
            f"single objects, seen triples (n={gen['seen']['n']}): {' / '.join(attrs)}",
            each(gen["seen"]),
            ">= 98% each",
            every(gen["seen"], 0.98),
        ),
        (
            f"single objects, held-out triples (n={gen['held_out']['n']})",
            each(gen["held_out"]),
            ">= 95% each",
            every(gen["held_out"], 0.95),
        ),
    ]
    if "two_objects" in r:
        two = r["two_objects"]
        rows.append(
            (
                f"two-object captions, both objects right in every attribute (n={two['n']})",
                f"{pct(two['both_right'])} (each object {pct(two['each_object_right'])}, "
                f"exactly two {pct(two['exactly_two_objects'])})",
                ">= 90%",
                two["both_right"] >= 0.9,
            )
        )
    if "compositions" in r:
        comp = r["compositions"]
        rows.append(
            (
                f"compositions, a prompt per half of 256x128: exactly its object, colour and shape right "
                f"({comp['regions']} halves)",
                pct(comp["region_right"]),
                ">= 90%",
                comp["region_right"] >= 0.9,
            )
        )
    if "inpainting_scene_caption" in r:
        scene = r["inpainting_scene_caption"]
        rows.append(
            (
                f"inpainting asked with the whole scene's caption: new object right / unmasked pixels "
                f"(n={scene['new_object']['n']})",
                f"{pct(scene['new_object']['all'])} / {scene['unmasked_mae']}/255",
                ">= 90% / < 3/255",
                scene["new_object"]["all"] >= 0.9 and scene["unmasked_mae"] < 3,
            )
        )
    rows.append(
        (
            f"inpainting asked with the new object's caption (n={inp['new_object']['n']})",
            f"{pct(inp['new_object']['all'])} / {inp['unmasked_mae']}/255",
            "(reported)",
            None,
        )
    )
    if "artefact_pixels" in gen:
        art = gen["artefact_pixels"]
        rows.append(
            (
                f"artefact pixels per single-object picture, median / 90th percentile / max (n={art['n']})",
                spread(art),
                "0 / <= 4",
                art["median"] == 0 and art["p90"] <= 4,
            )
        )
    vq = r["vqgan_psnr"]
    used = f"{pct(vq['codes_used'])} / " if "codes_used" in vq else ""
    rows.append(
        (
            "VQGAN: codes used on fresh pictures / reconstruction PSNR",
            f"{used}{vq['fresh']} dB",
            ">= 50% / >= 34 dB",
            vq.get("codes_used", 0.0) >= 0.5 and vq["fresh"] >= 34,
        )
    )
    if "recon_artefact_pixels" in vq:
        art = vq["recon_artefact_pixels"]
        rows.append(
            (
                f"VQGAN alone: artefact pixels per reconstructed one-object picture, median / p90 / max "
                f"(n={art['n']})",
                spread(art),
                "(the spot, before sampling)",
                None,
            )
        )
    out, var = r["outpainting"], r["variations"]
    rows += [
        ("outpainting: original kept (mean abs. error) / new area judged background / its clean pixels",
         f"{out['original_mae']}/255 / {pct(out['new_area_background'])} / "
         f"{pct(out.get('new_area_clean_pixels', float('nan')))}", "(reported)", None),
        (
            "variations: same background / colour as the source",
            f"{pct(var['same_as_source']['background'])} / {pct(var['same_as_source']['color'])}",
            f"> chance ({pct(var['chance']['background'])} / {pct(var['chance']['color'])})",
            var["same_as_source"]["background"] > var["chance"]["background"]
            and var["same_as_source"]["color"] > var["chance"]["color"],
        ),
    ]  # fmt: skip
    mark = {True: "yes", False: "**no**", None: ""}
    lines = ["| check | result | target | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {target} | {mark[met]} |" for name, value, target, met in rows]
    missed = [name.split(" (")[0].split(":")[0] for name, _, _, met in rows if met is False]
    lines.append("")
    lines.append(
        "Every target is met on these prompts." if not missed else f"Below target: {'; '.join(missed)}."
    )
    s = r["sampler"]
    typical = f"mass {s['typical_mass']}" if s["typical_filtering"] else "off"
    lines.append("")
    lines.append(
        f"Sampler: {s['steps']} steps, guidance {s['guidance_scale']}, typical filtering {typical}, "
        f"temperature {s['temp_range'][0]} -> {s['temp_range'][1]}; seed {r.get('seed', 0)}. "
        "The whole report: `python -m training eval`'s JSON."
    )
    return "\n".join(lines)
