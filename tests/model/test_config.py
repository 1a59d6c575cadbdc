import json
from pathlib import Path

import pytest

from model.config import PAELLA_V1, Knobs, ModelConfig, SamplerConfig

SPEC = Path(__file__).resolve().parents[1] / "fixtures"


def test_v1_presets_match_the_published_constructor_configs():
    den = json.loads((SPEC / "paella-v1-denoiser.keys.json").read_text())["config"]
    vq = json.loads((SPEC / "vqgan-f8-v1.keys.json").read_text())["config"]
    d = PAELLA_V1.denoiser
    assert (d.num_labels, d.c_hidden, d.c_clip, d.c_r) == (
        den["num_labels"],
        den["c_hidden"],
        den["c_clip"],
        den["c_r"],
    )
    assert list(d.down_levels) == den["down_levels"] and list(d.up_levels) == den["up_levels"]
    assert d.c_levels == (320, 640, 1280)
    for key, value in vq.items():
        got = getattr(PAELLA_V1.vqgan, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_model_config_round_trips_through_json():
    again = ModelConfig.from_dict(json.loads(json.dumps(PAELLA_V1.to_dict())))
    assert again == PAELLA_V1


def test_knobs_apply_over_the_defaults_and_mean_one_thing_however_asked():
    base = SamplerConfig(steps=8, guidance_scale=2.5, temp_range=(1.0, 0.5), typical_mass=0.2)
    assert base.with_knobs(Knobs()) == base
    tuned = base.with_knobs(Knobs(steps=4, guidance_scale=-1, temperature=0.7, typical_mass=0.4))
    assert (tuned.steps, tuned.guidance_scale, tuned.temp_range, tuned.mass) == (4, -1, (0.7, 0.7), 0.4)
    assert not tuned.guided and base.guided
    off = base.with_knobs(Knobs(typical_mass=0.0))
    assert (off.typical_filtering, off.mass) == (False, 0.0)
    assert off == base.replace(typical_filtering=False).with_knobs(Knobs())  # one config for "off"


def test_the_size_rules_of_a_canvas():
    assert (PAELLA_V1.size_multiple, PAELLA_V1.min_side, PAELLA_V1.downscale) == (32, 64, 8)
    assert PAELLA_V1.grid(256, 384) == (48, 32)
    for width, height in [(240, 256), (32, 256), (256, 48)]:
        with pytest.raises(ValueError, match="multiples of 32, at least 64"):
            PAELLA_V1.grid(width, height)
