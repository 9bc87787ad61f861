"""Whether this operator process may act: one global control loop per process, acting only while the process
holds kopf's peering.

kopf pauses an operator's handlers while another live peer of the same peering has the same or a higher
priority (kopf/_core/engines/peering.py, ``process_peering_event``). The loop runs beside kopf, not as a kopf
daemon (a daemon needs an object to run on, and stops whenever kopf loses that object's watch, as it can while
an API server restarts), so it reads the same peering object and applies the same rule: the loop and kopf's
handlers agree on which replica acts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

log = logging.getLogger("kilowatt.leadership")

PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"


class Leadership(Protocol):
    def active(self) -> bool: ...


class Standalone:
    """No peering (one operator, e.g. for development): always active."""

    def active(self) -> bool:
        return True


def holds_peering(status: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule on a peering object's status (identity -> priority, lifetime seconds, lastseen): this peer is
    alive and no other live peer has the same or a higher priority."""

    def alive(info: Mapping[str, Any]) -> bool:
        try:
            seen = datetime.fromisoformat(str(info["lastseen"]))
        except (KeyError, ValueError):
            return False
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=timezone.utc)
        return seen + timedelta(seconds=float(info.get("lifetime", 60))) > now

    mine = status.get(identity)
    if mine is None or not alive(mine):
        return False  # kopf has not announced this process yet, or stopped being able to
    return not any(alive(info) and int(info.get("priority", 0)) >= priority
                   for other, info in status.items() if other != identity)


class KopfPeering:
    """Active while this process holds the cluster-wide kopf peering ``name`` (one GET a period)."""

    def __init__(self, custom: Any, name: str, identity: str, priority: int) -> None:
        self.custom, self.name, self.identity, self.priority = custom, name, identity, priority
        self._was: bool | None = None

    def active(self) -> bool:
        try:
            body = self.custom.get_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL, self.name,
                                                         _request_timeout=10)
            now = datetime.now(timezone.utc)  # kopf stamps lastseen with the wall clock
            active = holds_peering(body.get("status") or {}, self.identity, self.priority, now)
        except Exception as exc:  # noqa: BLE001 - unknown is not active: never act without knowing
            if self._was is not False:
                log.warning("cannot read peering %s (%s): standing by", self.name, str(exc).splitlines()[0][:200])
            self._was = False
            return False
        if active != self._was:
            log.info("peering %s: %s", self.name, "active, the control loop acts" if active else
                     "another operator holds it: standing by")
        self._was = active
        return active
