"""A source that returns what it was given: for dry runs (`kilowatt plan`), tests and the twin's adapter."""

from __future__ import annotations

from kilowatt.metrics.source import Observations, ServiceRef, Topology


class StaticSource:
    def __init__(self, observations: Observations | None = None) -> None:
        self.observations = observations or Observations(available=True)

    def observe(self, services: list[ServiceRef], topology: Topology, price_queries: list[str]) -> Observations:
        o = self.observations
        return Observations(o.available, o.error, {s.key: o.services.get(s.key) for s in services}, dict(o.pools),
                            dict(o.prices_usd_per_kwh), dict(o.metric_names))
