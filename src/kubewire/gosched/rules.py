"""The model's constants, as the Go runtime (runtime/proc.go) defines them."""

from __future__ import annotations

from dataclasses import dataclass

from kubewire.gosched.errors import RulesError


@dataclass(frozen=True, slots=True)
class Rules:
    """The scheduler's constants. The defaults are Go's; change one to get a broken variant.

    ``spill`` is how many goroutines ``runqputslow`` moves to the global queue when the local
    queue is full: half the ring plus the new one (129); ``None`` means that default for the
    chosen ``local_queue_size``. ``global_batch_max`` caps a batch grab from the global queue
    (Go: half the local queue); ``None`` means that default. ``runnext`` off makes every
    ``ready``/``newproc`` put the goroutine at the local queue's tail.
    """

    global_check_interval: int = 61
    local_queue_size: int = 256
    spill: int | None = None
    global_batch_max: int | None = None
    steal_passes: int = 4
    preempt_ns: int = 10_000_000
    runnext: bool = True

    def __post_init__(self) -> None:
        for name in ("global_check_interval", "local_queue_size", "steal_passes", "preempt_ns"):
            if getattr(self, name) < 1:
                raise RulesError(f"Rules.{name} must be at least 1, got {getattr(self, name)}; "
                                 "leave it at its default to use Go's value")
        if self.spill is not None and not 1 <= self.spill <= self.local_queue_size + 1:
            raise RulesError(f"Rules.spill must be in 1..local_queue_size+1 "
                             f"({self.local_queue_size + 1}), got {self.spill}")
        if self.global_batch_max is not None and self.global_batch_max < 1:
            raise RulesError(f"Rules.global_batch_max must be at least 1, got "
                             f"{self.global_batch_max}")

    @property
    def spill_count(self) -> int:
        """Goroutines moved to the global queue on overflow, the new one included."""
        return self.local_queue_size // 2 + 1 if self.spill is None else self.spill

    @property
    def batch_max(self) -> int:
        return self.local_queue_size // 2 if self.global_batch_max is None else \
            self.global_batch_max
