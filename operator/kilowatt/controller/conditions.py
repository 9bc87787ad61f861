"""Status conditions, merged by type so a handler and the loop can each set theirs."""

from __future__ import annotations

from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(conditions: list[dict], type_: str, status: bool | None, reason: str, message: str) -> list[dict]:
    """A new list with ``type_`` set; lastTransitionTime moves only when the status changes."""
    value = "Unknown" if status is None else ("True" if status else "False")
    out, found = [], False
    for c in conditions or []:
        if c.get("type") == type_:
            found = True
            changed = c.get("status") != value
            out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                        "lastTransitionTime": now_iso() if changed else c.get("lastTransitionTime", now_iso())})
        else:
            out.append(c)
    if not found:
        out.append({"type": type_, "status": value, "reason": reason, "message": message[:1000],
                    "lastTransitionTime": now_iso()})
    return out


def condition(conditions: list[dict], type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
