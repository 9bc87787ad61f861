"""Status conditions, merged by type so a handler and the loop can each set theirs. Time is passed in (the
loop's clock), never read here: in the demo and the soak the clock is simulated."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(at: datetime) -> str:
    """RFC 3339 to the second, UTC, as Kubernetes writes times."""
    return at.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(conditions: list[dict], type_: str, status: bool | None, reason: str, message: str,
                  now: datetime) -> list[dict]:
    """A new list with ``type_`` set; lastTransitionTime moves to ``now`` only when the status changes."""
    value = "Unknown" if status is None else ("True" if status else "False")
    out, found = [], False
    for c in conditions or []:
        if c.get("type") == type_:
            found = True
            changed = c.get("status") != value
            out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                        "lastTransitionTime": iso(now) if changed else c.get("lastTransitionTime", iso(now))})
        else:
            out.append(c)
    if not found:
        out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                    "lastTransitionTime": iso(now)})
    return out


def condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def condition_message(status: dict, type_: str) -> str | None:
    found = condition(status.get("conditions"), type_)
    return found.get("message") if found else None


def conditions_same(a: list | None, b: list | None) -> bool:
    """Equal but for transition times."""
    strip = lambda cs: [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs or []]  # noqa: E731
    return strip(a) == strip(b)
