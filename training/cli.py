"""The training side's command line, `python -m training` (or `paella-train`): train, pack, eval and
convert-weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.config import Knobs
from model.folder import PARTS, part_file
from training.mini import PAELLA_MINI

# Shares of `train all --minutes` per network, run one after another.
ALL_SHARES = {"vqgan": 0.3, "clip": 0.2, "denoiser": 0.5}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `train`, `pack`, `eval` and `convert-weights` to a command line's subparsers."""
    train = subparsers.add_parser("train", help="train paella-mini's networks on the shapes world")
    train.add_argument("network", choices=(*PARTS, "all"))
    train.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for the network's checkpoint (for `all`: the packed weight folder)",
    )
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--minutes", type=float, help="time budget; training ends gracefully and saves")
    train.add_argument("--steps", type=int, help="step budget (with --minutes: whichever ends first)")
    train.add_argument("--batch", type=int, help="batch size (default per network)")
    train.add_argument("--lr", type=float, help="peak learning rate (default per network)")
    train.add_argument("--vqgan", type=Path, help="denoiser: folder of vqgan.safetensors (default --out)")
    train.add_argument("--clip", type=Path, help="denoiser: folder of clip.safetensors (default --out)")
    train.add_argument(
        "--init",
        type=Path,
        help="vqgan: folder of a trained vqgan.safetensors whose decoding side to train further; "
        "denoiser: folder of a trained denoiser.safetensors to train further",
    )
    train.add_argument(
        "--token-noise",
        type=float,
        default=0.0,
        help="vqgan (--init, or fsq from halfway on): share of tokens swapped in half of each batch, "
        "decoded to the clean picture",
    )
    train.add_argument(
        "--usage-weight",
        type=float,
        default=0.0,
        help="vqgan: weight of the code-usage term (sharp per position, many codes per batch); 0: off",
    )
    train.add_argument(
        "--reset-every",
        type=int,
        default=0,
        help="vqgan: re-seed the codes unused over this many steps from used ones; 0: never",
    )
    train.add_argument(
        "--quantizer",
        choices=("gumbel", "fsq"),
        default="gumbel",
        help="vqgan: v1's Gumbel quantizer, or finite scalar quantization stored in the same layout",
    )
    train.add_argument("--work", type=Path, default=Path("runs/paella-mini"), help="all: checkpoint folder")
    train.set_defaults(handler=_train)

    pack = subparsers.add_parser("pack", help="write the weight folder from trained checkpoints")
    pack.add_argument("--parts", type=Path, required=True, help="folder of the three checkpoints")
    pack.add_argument("--out", type=Path, default=Path("weights/paella-mini"))
    pack.add_argument("--results", type=Path, help="an eval JSON to put in the model card")
    pack.set_defaults(handler=_pack)

    ev = subparsers.add_parser("eval", help="judge a weight folder on the shapes world")
    ev.add_argument("--weights", type=Path, default=Path("weights/paella-mini"))
    ev.add_argument("--out", type=Path, default=Path("results/eval.json"))
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--seen", type=int, default=160, help="prompts with seen triples")
    ev.add_argument("--held-out", type=int, default=100, help="prompts with held-out triples")
    ev.add_argument("--ops", type=int, default=40, help="pictures per image-operation check")
    ev.add_argument("--batch", type=int, default=16)
    ev.add_argument(
        "--seed",
        type=int,
        default=0,
        help="prompt and noise seeds of every check; tune the sampler on another seed than the one reported",
    )
    ev.add_argument("--steps", type=int, help="sampler override")
    ev.add_argument("--guidance", type=float, help="sampler override (< 0: off)")
    ev.add_argument("--temp", type=float, nargs=2, metavar=("START", "END"), help="sampler override")
    ev.add_argument("--typical", type=float, help="sampler override: typical mass (0: off)")
    ev.set_defaults(handler=_eval)

    convert = subparsers.add_parser(
        "convert-weights", help="turn the published Paella v1 files into a weight folder"
    )
    convert.add_argument("denoiser", type=Path, help="Paella's model_600000.pt")
    convert.add_argument("vqgan", type=Path, help="ruDALL-E's vqgan.gumbelf8-sber.model.ckpt")
    convert.add_argument(
        "clip",
        type=Path,
        help="OpenCLIP ViT-g-14's open_clip_pytorch_model.bin or the model hub's open_clip_model.safetensors",
    )
    convert.add_argument("--out", type=Path, required=True, help="the weight folder to write")
    convert.add_argument(
        "--image-denoiser",
        type=Path,
        help="the denoiser fine-tuned on CLIP image embeddings (model_50000_img.pt); it runs the variations",
    )
    convert.add_argument("--bf16", action="store_true", help="store floating-point tensors as bfloat16")
    convert.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also read checkpoints that pickle objects besides tensors (Lightning .ckpt files); this runs "
        "code from the files: only for files you trust",
    )
    convert.set_defaults(handler=_convert)


def _budget(args: argparse.Namespace, share: float = 1.0) -> dict[str, object]:
    kwargs: dict[str, object] = {"device": args.device, "steps": args.steps}
    kwargs["minutes"] = None if args.minutes is None else args.minutes * share
    kwargs |= {k: getattr(args, k) for k in ("batch", "lr") if getattr(args, k) is not None}
    if kwargs["steps"] is None and kwargs["minutes"] is None:
        raise SystemExit("give --minutes or --steps")
    return kwargs


def _train(args: argparse.Namespace) -> None:
    from training.train_clip import train_clip
    from training.train_denoiser import train_denoiser
    from training.train_vqgan import refine_vqgan_decoder, train_vqgan

    if args.network == "vqgan" and args.init is not None:
        refine_vqgan_decoder(
            args.out,
            args.init,
            token_noise=args.token_noise,
            **_budget(args),  # type: ignore[arg-type]
        )
    elif args.network == "vqgan":
        usage = {"usage_weight": args.usage_weight, "reset_every": args.reset_every}
        usage |= {"quantizer": args.quantizer, "token_noise": args.token_noise}
        train_vqgan(args.out, **_budget(args), **usage)  # type: ignore[arg-type]
    elif args.network == "clip":
        train_clip(args.out, **_budget(args))  # type: ignore[arg-type]
    elif args.network == "denoiser":
        vqgan, clip = (
            (args.vqgan or args.out) / "vqgan.safetensors",
            (args.clip or args.out) / "clip.safetensors",
        )
        init = None if args.init is None else args.init / "denoiser.safetensors"
        train_denoiser(args.out, vqgan=vqgan, clip=clip, init=init, **_budget(args))  # type: ignore[arg-type]
    else:
        if args.batch is not None or args.lr is not None:
            raise SystemExit("`train all` uses each network's default batch and lr")
        work = args.work
        train_vqgan(work, **_budget(args, ALL_SHARES["vqgan"]))  # type: ignore[arg-type]
        train_clip(work, **_budget(args, ALL_SHARES["clip"]))  # type: ignore[arg-type]
        train_denoiser(
            work,
            vqgan=work / "vqgan.safetensors",
            clip=work / "clip.safetensors",
            **_budget(args, ALL_SHARES["denoiser"]),  # type: ignore[arg-type]
        )
        _pack_folder(work, args.out, None)


def _pack_folder(parts: Path, out: Path, results: Path | None) -> None:
    from training.pack import pack

    report = None if results is None else json.loads(results.read_text())
    files = {name: parts / part_file(name) for name in PARTS}
    print(f"packed {pack(out, parts=files, config=PAELLA_MINI, results=report)}")


def _pack(args: argparse.Namespace) -> None:
    _pack_folder(args.parts, args.out, args.results)


def _eval(args: argparse.Namespace) -> None:
    from model.pipeline import Pipeline
    from training.eval import evaluate, write_report

    pipe = Pipeline.from_folder(args.weights, device=args.device)
    sampler = pipe.config.sampler.with_knobs(
        Knobs(steps=args.steps, guidance_scale=args.guidance, typical_mass=args.typical)
    )
    if args.temp is not None:
        sampler = sampler.replace(temp_range=tuple(args.temp))
    report = evaluate(
        pipe,
        n_seen=args.seen,
        n_held_out=args.held_out,
        n_ops=args.ops,
        sampler=sampler,
        batch=args.batch,
        seed=args.seed,
    )
    report["weights"] = str(args.weights)
    write_report(report, args.out)
    print(f"wrote {args.out}")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from model.weights import convert_official

    folder = convert_official(
        args.denoiser,
        args.vqgan,
        args.clip,
        args.out,
        image_denoiser=args.image_denoiser,
        dtype=torch.bfloat16 if args.bf16 else torch.float32,
        allow_pickle=args.allow_pickle,
        progress=True,
    )
    print(f"wrote {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description="paella-mini training")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.handler(args)
