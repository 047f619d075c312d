"""Process-wide counters and gauges, rendered in the Prometheus text format at ``/metrics``.

Any layer may count (``metrics.inc("hfdav_hub_api_calls_total", kind="commit")``); only the
web layer renders. Values are per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_lock = threading.Lock()
_counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_gauges: dict[str, Callable[[], float]] = {}
_help: dict[str, str] = {}


def describe(name: str, text: str) -> None:
    _help[name] = text


def inc(name: str, value: float = 1, **labels: str) -> None:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    with _lock:
        _counters[key] = _counters.get(key, 0) + value


def gauge(name: str, read: Callable[[], float], text: str = "") -> None:
    """Register a gauge read at render time (e.g. the commit queue depth)."""
    with _lock:
        _gauges[name] = read
        if text:
            _help[name] = text


def value(name: str, **labels: str) -> float:
    key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
    with _lock:
        return _counters.get(key, 0)


def by_label(name: str, label: str) -> dict[str, float]:
    """The counters ``name`` keyed by the value of their one label ``label`` (e.g. Hub requests
    by kind)."""
    with _lock:
        items = [(labels, val) for (n, labels), val in _counters.items() if n == name]
    return {dict(labels).get(label, ""): val for labels, val in items}


def _fmt_labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + inner + "}"


def render() -> str:
    with _lock:
        counters = sorted(_counters.items())
        gauges = sorted(_gauges.items())
    lines: list[str] = []
    seen: set[str] = set()
    for (name, labels), val in counters:
        if name not in seen:
            seen.add(name)
            if name in _help:
                lines.append(f"# HELP {name} {_help[name]}")
            lines.append(f"# TYPE {name} counter")
        lines.append(f"{name}{_fmt_labels(labels)} {val:g}")
    for name, read in gauges:
        try:
            val = float(read())
        except Exception:  # a gauge that cannot be read is left out, not fatal
            continue
        if name in _help:
            lines.append(f"# HELP {name} {_help[name]}")
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {val:g}")
    return "\n".join(lines) + "\n"


def reset() -> None:
    """Forget every counter and gauge (tests)."""
    with _lock:
        _counters.clear()
        _gauges.clear()
