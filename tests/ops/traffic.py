"""Steady requests through the load balancer, counted: the proof that a change dropped none.

    from ops.traffic import Traffic     # (inside tests/ops: from traffic import Traffic)

    with Traffic(local_estate.lb_url, path="/version") as traffic:
        run = local_estate.playbook("playbooks/deploy.yml", ...)
    result = traffic.result
    assert result.failed == 0, result.summary()

`workers` threads each send GET <base_url><path> in a loop, a new connection per request
and no cookies, so every request goes through the balancer's choice of server; they sleep
`interval` seconds between requests. A request is ok only when it answers HTTP 200 within
`timeout` seconds; anything else (refused, reset, timeout, another status) is a failure.
Entering the context waits for a first successful request (a dead balancer fails fast);
leaving it stops the threads and sets `traffic.result`.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_ERRORS = 20  # failure descriptions kept (the counts are always complete)


@dataclass(frozen=True)
class TrafficResult:
    """Counts of one traffic run; `versions` counts the JSON field `version` of ok answers."""

    total: int
    ok: int
    failed: int
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0

    def summary(self) -> str:
        text = f"{self.total} requests, {self.failed} failed"
        if self.errors:
            text += "; first errors: " + "; ".join(self.errors)
        return text


class Traffic:
    """Steady GET requests to base_url + path from `workers` threads (see the module doc)."""

    def __init__(self, base_url: str, path: str = "/ping", workers: int = 2,
                 interval: float = 0.02, timeout: float = 10.0) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must be http://host[:port], got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = (parts.path.rstrip("/") + path) if path.startswith("/") else f"{parts.path}/{path}"
        self.workers, self.interval, self.timeout = workers, interval, timeout
        self.result: TrafficResult | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ok = self._failed = 0
        self._errors: list[str] = []
        self._versions: Counter[str] = Counter()
        self._started = 0.0

    # --- one request -----------------------------------------------------------------------

    def _request(self) -> tuple[bool, str, str | None]:
        """(ok, description of a failure, version field) of one GET on a new connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as err:
            return False, f"{type(err).__name__}: {err}", None
        finally:
            conn.close()
        if response.status != 200:
            return False, f"HTTP {response.status}: {body[:200]!r}", None
        try:
            version = json.loads(body).get("version")
        except (ValueError, AttributeError):
            version = None
        return True, "", None if version is None else str(version)

    def _loop(self) -> None:
        while not self._stop.is_set():
            ok, error, version = self._request()
            with self._lock:
                if ok:
                    self._ok += 1
                    if version is not None:
                        self._versions[version] += 1
                else:
                    self._failed += 1
                    if len(self._errors) < MAX_ERRORS:
                        self._errors.append(f"{time.monotonic() - self._started:.1f}s {error}")
            self._stop.wait(self.interval)

    # --- control -------------------------------------------------------------------------------

    def snapshot(self) -> TrafficResult:
        """The counts so far (the run goes on)."""
        with self._lock:
            return TrafficResult(
                total=self._ok + self._failed, ok=self._ok, failed=self._failed,
                errors=list(self._errors), versions=dict(self._versions),
                duration=time.monotonic() - self._started if self._started else 0.0,
            )

    def start(self) -> Traffic:
        """Starts the threads once a first request succeeded (RuntimeError otherwise)."""
        if self._threads:
            raise RuntimeError("this Traffic runs already; use a new one")
        deadline = time.monotonic() + self.timeout
        while True:
            ok, error, _ = self._request()
            if ok:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer from http://{self.host}:{self.port}{self.path}: {error}")
            time.sleep(0.2)
        self._started = time.monotonic()
        for number in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"traffic-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> TrafficResult:
        """Stops the threads (after their current request) and returns the final counts."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.result = self.snapshot()
        return self.result

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
