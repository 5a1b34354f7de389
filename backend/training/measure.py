"""What one training step costs, counted by torch's dispatcher (so it works on the CPU too).

- :func:`count_host_syncs`: the operators that make the host wait for a GPU. A value read back to Python
  (``.item()``, ``float(t)``, ``bool(t)``), a tensor built from host data (``torch.tensor([...])`` is a
  blocking pageable copy on CUDA), data-dependent output sizes (``nonzero``, boolean masks, ``unique``) and
  linalg error checks all sync on CUDA; on the CPU they run the same dispatcher ops, so counting them here
  counts the syncs the step would make on a GPU (the measurement the bench prints and the tests assert on).
  Scalars that live on the host anyway (a non-fused optimizer's step counters) count too, so the count is an
  upper bound.
- :func:`count_flops`: matmul / attention / conv FLOPs of forward + backward (torch's FlopCounterMode), for
  achieved TFLOP/s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",  # .item(), float(), int(), bool() of a tensor
        "lift_fresh",  # torch.tensor(host data)
        "lift_fresh_copy",
        "nonzero",
        "masked_select",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "_linalg_check_errors",
        "equal",
        "is_nonzero",
    }
)


# Indexing ops that sync only when indexed with a boolean mask (x[mask], x[mask] = v).
BOOL_INDEX_OPS = frozenset({"index", "index_put", "index_put_"})


class _SyncCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in SYNC_OPS or (name in BOOL_INDEX_OPS and _bool_index(args)):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(args: Any) -> bool:
    """A boolean mask among the indices: its output size depends on the data (a nonzero on CUDA)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


def count_host_syncs(fn: Callable[[], Any]) -> Counter[str]:
    """Run ``fn`` once and count the host-syncing operators it dispatches, by operator name."""
    with _SyncCounter() as counter:
        fn()
    return counter.counts


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (multiply-adds count 2) of the matmuls, attention and convolutions ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
