"""Per-access-key token buckets: past the rate, `RequestLimitExceeded` with 503, which
both boto3's standard retry mode and aws-cli's legacy mode back off on."""

from __future__ import annotations

import threading
import time

from apis.ec2.errors import Ec2Error


class Throttle:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one request of `key`'s budget, or raise RequestLimitExceeded."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                raise Ec2Error("RequestLimitExceeded", "Request limit exceeded.", 503)
            self._buckets[key] = (tokens - 1, now)
