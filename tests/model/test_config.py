import json
from pathlib import Path

from model.config import PAELLA_V1, ModelConfig

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
