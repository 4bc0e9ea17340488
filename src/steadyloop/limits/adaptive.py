"""`AdaptiveLimit`: a concurrency limit that moves with observed latency (the algorithm and
why: the limits page of the docs)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


class AdaptiveLimit:
    """A gradient concurrency limit: grows while latency stays near its no-load value.

    The controller (Envoy's gradient controller, with the smoothing and the app-limited guard
    of Netflix's Gradient2):

    - Calibration: the limit is pinned to `min_limit` until `calibration_samples` requests
      admitted during calibration complete; their median latency is the *baseline* (the
      latency without queueing). Calibration runs at start, every `recalibrate_every`
      seconds, and when the limit sat at `min_limit` for 5 windows in a row with latency
      above the baseline.
    - Every `window` seconds (and at least `min_window_samples` completions), the median
      latency of the window is compared with the baseline:
      `gradient = clamp(baseline * (1 + buffer) / sample, 0.5, 2.0)`,
      `new = limit * gradient + headroom`, where headroom is `sqrt(limit)` while the gradient
      is at least 1 (probing for more capacity) and 0 once latency shows queueing; the limit
      moves a `smoothing` fraction of the way there, within [min_limit, max_limit].
    - A window whose peak in-flight count stayed under half the limit cannot tell whether
      more concurrency would help, so it never raises the limit (Gradient2's guard).
    """

    def __init__(
        self,
        *,
        min_limit: int = 2,
        max_limit: int = 256,
        initial_limit: int | None = None,
        buffer: float = 0.25,
        smoothing: float = 0.2,
        window: float = 0.1,
        min_window_samples: int = 8,
        calibration_samples: int = 20,
        recalibrate_every: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError(f"need 1 <= min_limit <= max_limit, got {min_limit}, {max_limit}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.buffer = buffer
        self.smoothing = smoothing
        self.window = window
        self.min_window_samples = max(1, min_window_samples)
        self.calibration_samples = max(1, calibration_samples)
        self.recalibrate_every = recalibrate_every
        self._clock = clock
        start = initial_limit if initial_limit is not None else min_limit
        self._estimate = float(min(max(start, min_limit), max_limit))
        self._baseline: float | None = None
        self._calibrating_since: float | None = None
        self._calibration: list[float] = []
        self._next_calibration = 0.0
        self._window: list[float] = []
        self._window_start = clock()
        self._window_peak = 0
        self._at_min_windows = 0
        self._begin_calibration(self._window_start)

    @property
    def limit(self) -> int:
        """The current limit: `min_limit` while calibrating, then the estimate within [`min_limit`,
        `max_limit`].
        """
        if self._calibrating_since is not None:
            return self.min_limit
        return max(self.min_limit, min(self.max_limit, int(self._estimate)))

    @property
    def baseline(self) -> float | None:
        """The latency measured without load (seconds), or `None` before calibration ends."""
        return self._baseline

    @property
    def calibrating(self) -> bool:
        """True while the no-load latency is still being measured."""
        return self._calibrating_since is not None

    def observe_in_flight(self, in_flight: int) -> None:
        """Called at each admission: the window's peak concurrency."""
        if in_flight > self._window_peak:
            self._window_peak = in_flight

    def on_sample(self, admitted_at: float, latency: float) -> bool:
        """Record one completed request; return True when the limit may have changed."""
        now = self._clock()
        if self._calibrating_since is not None:
            if admitted_at >= self._calibrating_since:
                self._calibration.append(latency)
            if len(self._calibration) < self.calibration_samples:
                return False
            self._baseline = statistics.median(self._calibration)
            self._calibrating_since = None
            self._calibration = []
            self._next_calibration = now + self.recalibrate_every
            self._reset_window(now)
            return True
        self._window.append(latency)
        if now - self._window_start < self.window or len(self._window) < self.min_window_samples:
            return False
        self._update(statistics.median(self._window), now)
        self._reset_window(now)
        if now >= self._next_calibration or self._at_min_windows >= 5:
            self._begin_calibration(now)
        return True

    def _update(self, sample: float, now: float) -> None:
        baseline = self._baseline if self._baseline is not None else sample
        gradient = max(0.5, min(2.0, baseline * (1 + self.buffer) / max(sample, 1e-9)))
        current = self._estimate
        if gradient >= 1.0 and self._window_peak < current / 2:
            return  # application-limited: no evidence that more concurrency would help
        # Headroom probes for more capacity only while latency shows no queueing: added on
        # top of a shrinking limit it would keep a standing queue of sqrt(limit) requests.
        target = current * gradient + (math.sqrt(current) if gradient >= 1.0 else 0.0)
        estimate = current * (1 - self.smoothing) + target * self.smoothing
        self._estimate = max(float(self.min_limit), min(float(self.max_limit), estimate))
        # Pinned at the minimum while latency stays high: the baseline may be out of date.
        stuck = gradient < 1.0 and self.limit <= self.min_limit
        self._at_min_windows = self._at_min_windows + 1 if stuck else 0

    def _reset_window(self, now: float) -> None:
        self._window = []
        self._window_start = now
        self._window_peak = 0

    def _begin_calibration(self, now: float) -> None:
        self._calibrating_since = now
        self._calibration = []
        self._at_min_windows = 0
