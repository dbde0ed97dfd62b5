"""Each capped project's sends per recipient in memory (the `FrequencyCaps` port)."""

from __future__ import annotations


class MemoryFrequencyCaps:
    """The `FrequencyCaps` port in a dict, as `SqlFrequencyCaps` counts."""

    def __init__(self) -> None:
        """No sends counted yet."""
        self.sends: dict[tuple[str, str], list[int]] = {}

    async def take(
        self, project_id: str, recipient: str, cap: int, now_ms: int, window_ms: int
    ) -> int | None:
        """Count one send if fewer than `cap` went in the last `window_ms`; else when the
        next may go."""
        times = sorted(
            t for t in self.sends.get((project_id, recipient), []) if t > now_ms - window_ms
        )
        if len(times) >= cap:
            return times[len(times) - cap] + window_ms
        self.sends[(project_id, recipient)] = [*times, now_ms][-cap:]
        return None
