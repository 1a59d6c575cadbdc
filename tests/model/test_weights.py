import dataclasses
import importlib
import json
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import model.weights as weights
import training.cli as training_cli
from model.config import PAELLA_V1, DenoiserConfig, ModelConfig, VQGANConfig
from model.denoiser import Denoiser
from model.folder import read_config, read_extra
from model.vqgan import VQGAN
from model.weights import (
    convert_official,
    load_module,
    load_official_denoiser,
    load_official_vqgan,
    read_folder,
    write_folder,
)

DENOISER = DenoiserConfig(num_labels=32, c_hidden=32, c_clip=8, c_r=4, down_levels=(1, 1), up_levels=(1, 1))
VQ = VQGANConfig(
    ch=32,
    ch_mult=(1, 1),
    num_res_blocks=1,
    attn_resolutions=(8,),
    z_channels=4,
    embed_dim=4,
    n_embed=8,
    resolution=16,
)
CONFIG = ModelConfig(name="tiny", denoiser=DENOISER, vqgan=VQ, clip=PAELLA_V1.clip, image_size=16)


class Hparams:
    """A stand-in for the custom objects some training checkpoints pickle."""


def randomized(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    clip = {
        "text_projection": torch.randn(3, 2),
        "positional_embedding": torch.randn(5, 3),
        "ids": torch.arange(4),
    }
    return {"denoiser": randomized(Denoiser(DENOISER), 0), "vqgan": randomized(VQGAN(VQ), 1), "clip": clip}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def published(tmp_path: Path, states) -> tuple[Path, Path, Path]:
    den, vq, clip = tmp_path / "model_600000.pt", tmp_path / "vqgan.ckpt", tmp_path / "open_clip.bin"
    torch.save(states["denoiser"], den)
    vq_state = {**states["vqgan"], "loss.discriminator.main.0.weight": torch.ones(2, 3)}
    torch.save({"state_dict": vq_state, "global_step": 7}, vq)
    torch.save(states["clip"], clip)
    return den, vq, clip


def test_published_denoiser_round_trips_exactly(tmp_path: Path, states):
    den, _, _ = published(tmp_path, states)
    config = {**dataclasses.asdict(DENOISER), "down_levels": [1, 1]}  # as JSON would give it
    model = load_official_denoiser(den, **config)
    assert model.config == DENOISER
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert_same(model.state_dict(), states["denoiser"])


def test_published_vqgan_round_trips_exactly_and_ignores_the_loss(tmp_path: Path, states):
    _, vq, _ = published(tmp_path, states)
    model = load_official_vqgan(vq, **dataclasses.asdict(VQ))
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert_same(model.state_dict(), states["vqgan"])
    with torch.inference_mode():
        assert model.decode(torch.zeros(1, 2, 3, dtype=torch.long)).shape == (1, 3, 4, 6)


def test_legacy_serialization_still_loads(tmp_path: Path, states):
    path = tmp_path / "legacy.pt"
    torch.save(states["denoiser"], path, _use_new_zipfile_serialization=False)
    assert_same(load_official_denoiser(path, **dataclasses.asdict(DENOISER)).state_dict(), states["denoiser"])


def test_wrong_checkpoints_are_refused_with_the_file_named(tmp_path: Path, states):
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in states["denoiser"].items() if k != "clf.bias"}, missing)
    with pytest.raises(ValueError, match=r"(?s)missing\.pt.*clf\.bias"):
        load_official_denoiser(missing, **dataclasses.asdict(DENOISER))
    no_state = tmp_path / "no_state.ckpt"
    torch.save(states["vqgan"], no_state)
    with pytest.raises(ValueError, match=r"no_state\.ckpt.*'state_dict'"):
        load_official_vqgan(no_state, **dataclasses.asdict(VQ))
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": states["vqgan"], "hparams": Hparams()}, pickled)
    with pytest.raises(ValueError, match=r"pickled\.pt.*not loaded"):
        load_official_vqgan(pickled, **dataclasses.asdict(VQ))


def test_load_module_fills_a_meta_module_in_the_asked_dtype(states):
    with torch.device("meta"):
        model = Denoiser(DENOISER)
    load_module(model, states["denoiser"], dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    torch.testing.assert_close(model.clf.weight.float(), states["denoiser"]["clf.weight"], rtol=1e-2, atol=0)


def test_folder_round_trips_exactly(tmp_path: Path, states):
    vocab = json.dumps(["a", "red", "circle"]).encode()
    folder = write_folder(tmp_path / "m", CONFIG, states, extra_files={"vocab.json": vocab})
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert set(manifest) == {
        "config.json",
        "denoiser.safetensors",
        "vqgan.safetensors",
        "clip.safetensors",
        "vocab.json",
    }
    config, tensors = read_folder(folder)
    assert config == CONFIG
    for part in states:
        assert_same(tensors[part], states[part])
    assert read_extra(folder, "vocab.json") == vocab


def test_folder_casts_only_floating_tensors(tmp_path: Path, states):
    folder = write_folder(tmp_path / "m", CONFIG, states, dtype=torch.float16)
    _, tensors = read_folder(folder)
    assert tensors["vqgan"]["quantize.embed.weight"].dtype == torch.float16
    assert tensors["clip"]["ids"].dtype == torch.int64


def test_shared_and_strided_tensors_are_stored(tmp_path: Path):
    base = torch.randn(4, 6)
    state = {"a": base, "b": base, "t": base.t(), "row": base[1]}
    _, tensors = read_folder(write_folder(tmp_path / "m", CONFIG, {"clip": state}), parts=["clip"])
    assert_same(tensors["clip"], {"a": base, "b": base, "t": base.t().contiguous(), "row": base[1]})


@pytest.mark.parametrize("name", ["vqgan.safetensors", "config.json", "vocab.json"])
def test_a_tampered_file_is_rejected(tmp_path: Path, states, name: str):
    folder = write_folder(tmp_path / "m", CONFIG, states, extra_files={"vocab.json": b"[]"})
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 1
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ": sha256 does not match"):
        read_folder(folder)


def test_a_missing_or_unlisted_file_is_rejected(tmp_path: Path, states):
    folder = write_folder(tmp_path / "m", CONFIG, states)
    (folder / "clip.safetensors").unlink()
    with pytest.raises(ValueError, match=r"clip\.safetensors: listed in manifest\.json but missing"):
        read_folder(folder)
    with pytest.raises(ValueError, match=r"vocab\.json: not listed"):
        read_extra(folder, "vocab.json")
    _, tensors = read_folder(folder, parts=["vqgan"])  # a part read alone needs only its own file
    assert list(tensors) == ["vqgan"]
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["vqgan.safetensors"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"vqgan\.safetensors: not listed"):
        read_folder(folder, parts=["vqgan"])


def test_the_config_alone_is_read_with_its_manifest_check_and_no_tensor(tmp_path: Path, states):
    folder = write_folder(tmp_path / "m", CONFIG, states)
    (folder / "denoiser.safetensors").unlink()  # not needed to read the config
    assert read_config(folder) == CONFIG
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"tiny"', '"evil"'))
    with pytest.raises(ValueError, match=r"config\.json: sha256 does not match"):
        read_config(folder)


def test_random_folders_load_and_differ_by_seed(tmp_path: Path, tiny_model_dir: Path):
    from model.weights import write_random_folder
    from tests.conftest import tiny_model_config, tiny_vocabulary

    again = write_random_folder(tmp_path / "same", tiny_model_config(), tiny_vocabulary(), seed=0)
    other = write_random_folder(tmp_path / "other", tiny_model_config(), tiny_vocabulary(), seed=1)
    _, a = read_folder(tiny_model_dir)
    _, b = read_folder(again)
    _, c = read_folder(other)
    for part in a:
        assert_same(a[part], b[part])
    assert not torch.equal(a["denoiser"]["clf.weight"], c["denoiser"]["clf.weight"])


def test_convert_official_writes_a_folder_the_reader_accepts(tmp_path: Path, states, monkeypatch):
    monkeypatch.setattr(weights, "PAELLA_V1", CONFIG)  # the v1 layout, at a tiny size
    den, vq, clip = published(tmp_path, states)
    folder = convert_official(den, vq, clip, tmp_path / "converted", dtype=torch.float16)
    config, tensors = read_folder(folder)
    assert config == CONFIG
    assert "Paella v1" in read_extra(folder, "README.md").decode()
    for part in states:
        expected = {k: v.half() if v.is_floating_point() else v for k, v in states[part].items()}
        assert_same(tensors[part], expected)


LIGHTNING_LIKE = """
class ModelCheckpoint:
    def __init__(self, monitor):
        self.monitor = monitor


class AttributeDict(dict):
    pass
"""


def lightning_checkpoint(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    """A Lightning-style `.ckpt`: the state dict beside pickled objects of classes not installed at load."""
    name = f"lightning_like_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(LIGHTNING_LIKE)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
        checkpoint = {
            "state_dict": state,
            "epoch": 3,
            "global_step": 7,
            "pytorch-lightning_version": "1.4.2",
            "callbacks": {module.ModelCheckpoint: module.ModelCheckpoint("val/rec_loss")},
            "hyper_parameters": module.AttributeDict(lr=4.5e-6, embed_dim=256),
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6}]}],
        }
        path = tmp_path / "vqgan.gumbelf8-sber.model.ckpt"
        torch.save(checkpoint, path)
    finally:
        sys.path.remove(str(tmp_path))
        del sys.modules[name]
        (tmp_path / f"{name}.py").unlink()
    return path


def test_every_published_layout_converts(tmp_path: Path, states, monkeypatch):
    """A plain state dict (the denoisers), a Lightning checkpoint with pickled objects (the VQGAN, read only
    when allowed) and OpenCLIP's safetensors from the model hub's layout."""
    monkeypatch.setattr(weights, "PAELLA_V1", CONFIG)
    den, image_den = tmp_path / "model_600000.pt", tmp_path / "model_50000_img.pt"
    torch.save(states["denoiser"], den)
    image_state = randomized(Denoiser(DENOISER), 5)
    torch.save(image_state, image_den)
    vq = lightning_checkpoint(tmp_path, {**states["vqgan"], "loss.logvar": torch.zeros(())})
    clip = tmp_path / "open_clip_model.safetensors"
    save_file(states["clip"], clip)
    with pytest.raises(ValueError, match=r"(?s)sber\.model\.ckpt.*not loaded.*--allow-pickle"):
        convert_official(den, vq, clip, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    with pytest.warns(UserWarning, match=r"sber\.model\.ckpt.*runs code from the file"):
        folder = convert_official(den, vq, clip, tmp_path / "v1", image_denoiser=image_den, allow_pickle=True)
    config, tensors = read_folder(folder)
    assert config == CONFIG and set(tensors) == {"denoiser", "vqgan", "clip", "image_denoiser"}
    for part, expected in {**states, "image_denoiser": image_state}.items():
        assert_same(tensors[part], expected)
    card = read_extra(folder, "README.md").decode()
    assert "`model_50000_img.pt`" in card and "`open_clip_model.safetensors`" in card


def test_convert_weights_command_shows_progress(tmp_path: Path, states, monkeypatch, capsys):
    monkeypatch.setattr(weights, "PAELLA_V1", CONFIG)
    den, vq, clip = published(tmp_path, states)
    training_cli.main(
        ["convert-weights", str(den), str(vq), str(clip), "--out", str(tmp_path / "out"), "--bf16"]
    )
    out, err = capsys.readouterr()
    assert out.strip() == f"wrote {tmp_path / 'out'}"
    assert "convert-weights: 100%" in err and "4/4" in err
    assert read_folder(tmp_path / "out", ["denoiser"])[1]["denoiser"]["clf.weight"].dtype == torch.bfloat16
