"""Our networks against outputs of the reference code, stored in tests/fixtures/reference_outputs.pt.

The fixture was made outside this repository by a script that imported the reference modules:
`DenoiseUNet` from dome272/Paella `modules.py` at commit b1f88efb501d423d2170831cce8c2a13223f6f30, and
`Encoder`/`Decoder` from CompVis/taming-transformers `taming/modules/diffusionmodules/model.py` at
commit 3ba01b241669f5ade541ce990f7650a3b8f65318, wrapped with a 1x1 `quant_conv`, a Gumbel
quantizer's `proj` conv and `embed` codebook, and a 1x1 `post_quant_conv` as in ruDALL-E's wrapper.
Small seeded configs (stored in the fixture) got random weights, including layer scales near 1 and
perturbed norm affines so that every block matters, rounded to float16 values so the fixture stays
small (about 1.5 MB); the networks ran in float32 on the CPU. Stored outputs: the denoiser's logits for
a vector condition and for a 3x5 spatial condition at r = 0, 0.37 and 1; the VQGAN's code logits and
argmax indices for two 32x48 images (encoder input x*2-1), and the decoded pixels of those indices
(codebook rows, post_quant_conv, decoder, clamp(-1, 1), (x+1)/2).
"""

from pathlib import Path

import pytest
import torch

from model.config import DenoiserConfig, VQGANConfig
from model.denoiser import Denoiser
from model.vqgan import VQGAN
from model.weights import load_module

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_outputs.pt"
TOLERANCE = 1e-4  # relative L2 error; float32 rounding gives about 1e-7


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours.double() - theirs.double()).norm() / theirs.double().norm()).item()


def test_denoiser_logits_match_the_reference(reference):
    ref = reference["denoiser"]
    model = load_module(Denoiser(DenoiserConfig(**ref["config"])), ref["state_dict"]).eval()
    clip, spatial = ref["clip"].float(), ref["clip_spatial"].float()
    with torch.inference_mode():
        assert relative_error(model(ref["tokens"], clip, ref["r"]), ref["logits"]) < TOLERANCE
        assert relative_error(model(ref["tokens"], spatial, ref["r"]), ref["logits_spatial"]) < TOLERANCE


def test_vqgan_codes_and_pixels_match_the_reference(reference):
    ref = reference["vqgan"]
    model = load_module(VQGAN(VQGANConfig(**ref["config"])), ref["state_dict"]).eval()
    images = ref["images"].float()
    with torch.inference_mode():
        assert relative_error(model.code_logits(images), ref["code_logits"]) < TOLERANCE
        assert torch.equal(model.encode(images), ref["indices"])
        assert relative_error(model.decode(ref["indices"]), ref["decoded"]) < TOLERANCE
