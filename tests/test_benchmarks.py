"""Helpers of the benchmark scripts whose mistakes would skew a GPU run's figures."""

import torch

from benchmarks.pipeline_gpu import reference_mode
from benchmarks.support import differing


def test_reference_mode_turns_tf32_off_inside_and_restores_the_precision_settings_after():
    """Inductor keys its compiled artefacts on the matmul precision: a leaked setting made a restarted
    process miss every artefact of the first warm-up."""
    settings = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    before = [s.fp32_precision for s in settings]
    with reference_mode():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert [s.fp32_precision for s in settings] == before


def test_differing_lists_the_share_of_each_image_that_differs_largest_first():
    a = torch.zeros(3, 2, 2, dtype=torch.int64)
    b = a.clone()
    b[0, 0, 0] = 1
    b[2] = 5
    assert differing(a, b) == [1.0, 0.25]
