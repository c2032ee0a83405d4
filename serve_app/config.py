"""san-serve's settings, checked once where they are made."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOOPBACK_NAMES", "ServeSettings", "is_loopback"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for 0.0.0.0, :: and others."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """Limits and options of one server (the ``san-serve`` flags; see ``serve_app.cli``)."""

    max_pixels: int = 16_000_000  # input pixels; outputs above max_pixels * scale**2 are refused too
    max_upload_bytes: int = 64 * 2**20  # whole request body
    queue_size: int = 16  # jobs admitted at once (queued + running + encoding); more: 429
    niqe_max_pixels: int = 4_000_000  # NIQE only for outputs up to this many pixels
    result_ttl: float = 900.0  # seconds a finished job's record and result file are kept
    upload_idle_timeout: float = 10.0  # 408 when an upload sends nothing for this long
    upload_total_timeout: float = 120.0  # 408 when an upload is not complete after this long
    token: str | None = None  # required as "Authorization: Bearer <token>" on /v1 and /metrics when set
    allowed_hosts: tuple[str, ...] | None = None  # Host header names accepted (None: any); DNS-rebinding guard
    temp_parent: Path | None = None  # where the private job folder is made (None: the system's temp folder)

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_upload_bytes", "queue_size", "niqe_max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "niqe_max_pixels" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("result_ttl", "upload_idle_timeout", "upload_total_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the token must have at least 8 characters")
