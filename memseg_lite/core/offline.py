"""The offline switch: ``MEMSEG_OFFLINE=1`` means no socket to another machine is ever opened.

Every place that could reach the network (the ImageNet weights in ``network.encoder``, the
MVTec AD / DTD downloads in ``datasets.download``) asks :func:`offline_requested` first and, when
it is set, refuses before any name look-up. Only literal loopback addresses (``127.0.0.1``,
``::1``) stay allowed for downloads: they never leave the machine (a local mirror, or the tests'
own HTTP server). ``localhost`` is a name, so it is refused like any other.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

OFFLINE_VARIABLE = "MEMSEG_OFFLINE"


def offline_requested() -> bool:
    """True when the environment variable ``MEMSEG_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is a literal loopback address (no name look-up is needed to reach it)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def network_allowed(url: str) -> bool:
    """May ``url`` be fetched now? Always, unless ``MEMSEG_OFFLINE`` is set and ``url`` is not loopback."""
    return not offline_requested() or is_loopback_url(url)
