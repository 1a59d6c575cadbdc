"""CUDA graphs per batch bucket (and `compile_batched`, torch.compile over the batch dimension): a
function of batched tensors captured once per (bucket, input shapes, settings) and replayed over static
copies of its inputs. Replaying the whole sampling loop launches the ~6,000 kernels of an 8-step Paella v1
sample at once, so small batches are no longer bound by the host.

Batches are padded up to the next bucket (padded rows are zeros: valid inputs whose outputs are thrown
away). All captures share one memory pool; each replay's output (a tensor, or a named tuple of them) is copied
out before another replay can reuse that memory.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

# A batch runs as its bucket's size, so the padding is device time spent on nothing: steps of an eighth
# keep it under 12.5% above 8. A simulated device on the H100's curve at 95 requests/s
# (`benchmarks/launch_policy.py`, results/launch_policy_H100_curve*.json): p99 731 -> 564 ms with two
# batches in flight, 564 -> 454 ms with one, against the earlier ten buckets; a capture per extra bucket.
BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)

# Once warm-up is over, a setting met for the first time (an unguided batch, previews, another canvas or
# step count) runs uncaptured for this many uses before its graph is captured. A capture synchronises the
# device and empties the allocators' caches: every batch in flight stalls behind it. Uncaptured, the batch
# costs the host its kernel launches (thousands for a sampling loop) and stalls no one; a setting that keeps
# coming is worth one stall. Late captures are capped, each function's at MAX_LATE: every graph keeps its
# static inputs and outputs on the device, and settings are many (canvases x step counts x buckets).
CAPTURE_AFTER = 4
MAX_LATE = 64


def bucket(n: int, buckets: Sequence[int]) -> int | None:
    """The least bucket that holds n rows, or None when none does."""
    return next((b for b in sorted(buckets) if b >= n), None)


class BucketGraphs:
    """`fn(*tensors, **settings)` through CUDA graphs for batches up to the largest bucket.

    Args:
        fn: a function of tensors batched along their first dimension, returning one such tensor or a
            named tuple of them; keyword `settings` (hashable) are fixed per capture.
        buckets: the batch sizes captured; a larger batch runs `fn` directly.
        pool: a memory pool to share with other captures (`torch.cuda.graph_pool_handle()`).
        capture: False runs the same padded static batches without capturing (to check padding on a CPU).
        events: counts, by event, of `captured` graphs, `late` ones (captured after `seal`) and `uncaptured`
            runs (of a key met after `seal`, before its capture); may be shared by several instances.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        buckets: Sequence[int],
        *,
        pool: Any = None,
        capture: bool = True,
        events: Counter[str] | None = None,
    ) -> None:
        self.fn = fn
        self.buckets = tuple(sorted(buckets))
        self.pool = pool
        self.capture = capture
        self.events: Counter[str] = Counter() if events is None else events
        self.capture_after: int | None = None  # None: a key is captured at its first use
        self.max_late = 0
        self._late = 0
        self._graphs: dict[Hashable, tuple[list[Tensor], Callable[[], Any]]] = {}
        self._uses: Counter[Hashable] = Counter()

    def seal(self, capture_after: int = CAPTURE_AFTER, max_late: int = MAX_LATE) -> None:
        """Warm-up is over: from now on a key not yet captured runs `fn` directly (unpadded, nothing
        captured) for its first `capture_after - 1` uses, and is captured at the next, unless `max_late`
        keys have been captured since the seal: then it always runs directly."""
        if capture_after < 1 or max_late < 0:
            raise ValueError(
                f"capture_after must be at least 1 and max_late not negative, got {capture_after}, {max_late}"
            )
        self.capture_after = capture_after
        self.max_late = max_late
        self._late = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, *args: Tensor, **settings: Hashable) -> Any:
        n = args[0].shape[0]
        size = bucket(n, self.buckets)
        if size is None:
            return self.fn(*args, **settings)
        key = (size, tuple((a.shape[1:], a.dtype) for a in args), tuple(sorted(settings.items())))
        if key not in self._graphs:
            if self.capture_after is not None:
                self._uses[key] += 1
                if self._uses[key] < self.capture_after or self._late >= self.max_late:
                    self.events["uncaptured"] += 1
                    return self.fn(*args, **settings)
                self._late += 1
                self.events["late"] += 1
            self._graphs[key] = self._capture(args, size, settings)
            self.events["captured"] += 1
        static, run = self._graphs[key]
        for buffer, value in zip(static, args, strict=True):
            buffer[:n].copy_(value)
        return _first_rows(run(), n)

    def _capture(
        self, args: Sequence[Tensor], size: int, settings: dict[str, Hashable]
    ) -> tuple[list[Tensor], Callable[[], Any]]:
        static = [torch.zeros((size, *a.shape[1:]), dtype=a.dtype, device=a.device) for a in args]

        def run() -> Any:
            return self.fn(*static, **settings)

        if not self.capture:
            return static, run
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture: compiles kernels, sizes workspaces
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = run()

        def replay() -> Any:
            graph.replay()
            return out

        return static, replay


def _first_rows(out: Any, n: int) -> Any:
    """Copies of the first `n` rows of a tensor, or of each tensor of a named tuple."""
    if isinstance(out, Tensor):
        return out[:n].clone()
    return type(out)(*(t[:n].clone() for t in out))


def compile_batched(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`fn` through torch.compile, one compilation for every batch size (the batch dimension symbolic, every
    other one fixed, so kernels stay specialised to the canvas); if compiling fails, `fn` from then on."""
    compiled = torch.compile(fn)
    failed: list[Exception] = []

    def call(*args: Tensor) -> Tensor:
        if not failed:
            for a in args:
                torch._dynamo.maybe_mark_dynamic(a, 0)
            try:
                return compiled(*args)
            except Exception as e:  # a compiler error is no reason to stop serving
                failed.append(e)
                warnings.warn(f"torch.compile failed, running eagerly: {e!r}", RuntimeWarning, stacklevel=2)
        return fn(*args)

    return call


def compile_cache_counts() -> dict[str, int]:
    """How torch.compile's on-disk caches have served this process: Inductor's FX graph cache and
    AOTAutograd's, hits and misses. A restart whose warm-up misses compiles everything again: its cache key
    differs (another torch, other matmul precision settings, another graph)."""
    from torch._dynamo.utils import counters

    return {
        "fx_graph_hits": counters["inductor"]["fxgraph_cache_hit"],
        "fx_graph_misses": counters["inductor"]["fxgraph_cache_miss"],
        "aot_autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
        "aot_autograd_misses": counters["aot_autograd"]["autograd_cache_miss"],
    }
