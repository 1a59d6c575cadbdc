"""Which of the pipeline's targets a pipeline_gpu.py JSON meets; exit status 0 only when it meets all of them.

The targets are the fast pipeline's acceptance: on one H200, full-size Paella v1 (random weights, 256x256,
8 steps, guidance 5), one image in at most 40 ms, at least 120 images/s at the best batch size, the fast
path's tokens equal to our float32 eager path's on 99% of positions and a seed's tokens alone and in a
batch of 32 on 99.9% (paella-mini), and a warm-up under 3 minutes.

PYTHONPATH=. python benchmarks/targets.py benchmarks/results/pipeline_gpu_NVIDIA_H200.json
"""

from __future__ import annotations

import argparse
import json
import operator
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPARE = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}
CARD = "H200"
PRESET = "paella-v1 (random weights), 256x256, 8 steps, guidance 5"


@dataclass(frozen=True)
class Target:
    key: str
    sign: str  # a key of COMPARE
    limit: float
    what: str


TARGETS = (
    Target("batch1_latency_ms", "<=", 40.0, "one image, median (ms)"),
    Target("best_throughput_images_per_s", ">=", 120.0, "images/s at the best batch size"),
    Target("token_agreement", ">=", 0.99, "tokens equal to float32 eager (paella-mini)"),
    Target("batch_invariance_token_agreement", ">=", 0.999, "a seed alone vs in its batch of 32"),
    Target("warmup_s", "<", 180.0, "warm-up, first start (s)"),
)


@dataclass(frozen=True)
class Verdict:
    what: str
    value: Any
    wanted: str
    met: bool


def verdicts(run: dict[str, Any]) -> list[Verdict]:
    """Each target's value in `run` and whether it is met; the card and the preset first."""
    card, preset = run.get("card", ""), run.get("preset", "")
    out = [
        Verdict("card", card, f"an {CARD}", CARD in card),
        Verdict("preset", preset, PRESET, preset.startswith(PRESET)),
    ]
    for t in TARGETS:
        value = run.get(t.key)
        out.append(
            Verdict(
                t.what, value, f"{t.sign} {t.limit:g}", value is not None and COMPARE[t.sign](value, t.limit)
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    args = parser.parse_args()
    run = json.loads(args.result.read_text())
    found = verdicts(run)
    print(f"{args.result} ({run.get('date', 'no date')}, torch {run.get('torch', '?')})")
    for v in found:
        print(f"  {'met    ' if v.met else 'NOT MET'}  {v.what}: {v.value} (wanted {v.wanted})")
    sys.exit(0 if all(v.met for v in found) else 1)


if __name__ == "__main__":
    main()
