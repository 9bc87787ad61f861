"""Observe: the API objects, the cluster's nodes, Deployments and Pods, and the metrics -> one period's input.

Reads only; writes nothing. Everything the rest of the period needs about a service is built here once
(``ObservedService``) and carried through deciding, accounting and reporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kilowatt.api.v1alpha1 import AcceleratorPool
from kilowatt.controller.actuator import LABEL_SERVICE
from kilowatt.controller.cluster import ClusterView, read_cluster
from kilowatt.controller.reads import Reads
from kilowatt.controller.routing import ANNOTATION_APPLIED, HTTP_ROUTE, INFERENCE_POOL
from kilowatt.controller.validation import Problem, parse_pool, parse_service, reference_problems
from kilowatt.decide import ServiceInput
from kilowatt.metrics import MetricSource, Observations, ServiceRef
from kilowatt.planner.snapshot import CurrentPlacement, PoolState
from kilowatt.state import pool_state


@dataclass(frozen=True)
class ObservedService:
    body: dict  # the object as the API server returned it: what Deployments, status and events are written for
    input: ServiceInput
    applied_templates: dict[str, str | None] = field(default_factory=dict)  # pool -> its Deployment's template hash

    @property
    def key(self) -> str:
        return self.input.key


@dataclass
class PeriodInput:
    pools: dict[str, AcceleratorPool]
    pool_states: dict[str, PoolState]  # GPUs kilowatt may use now and the price this period
    services: list[ObservedService]
    view: ClusterView
    observations: Observations
    invalid_pools: list[tuple[dict, list[Problem]]] = field(default_factory=list)
    invalid_services: list[tuple[dict, list[Problem]]] = field(default_factory=list)
    # kilowatt's objects whose InferenceService is gone or being deleted: (service key, namespace, name,
    # apiVersion, kind) — Deployments and routing objects.
    orphans: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    served_apis: set[str] = field(default_factory=set)  # "group/version" the API server serves
    # service key -> (apiVersion, kind, name) -> the hash kilowatt stamped on it when it applied it
    routing_objects: dict[str, dict[tuple[str, str, str], str | None]] = field(default_factory=dict)
    price_fallbacks: dict[str, str] = field(default_factory=dict)  # pool -> why its price is the fallback

    @property
    def metrics_error(self) -> str | None:
        return None if self.observations.available else (self.observations.error or "metrics unavailable")


def observe(reads: Reads, core: Any, source: MetricSource, namespaces: tuple[str, ...] = (),
            parsed: ParseMemo | None = None) -> PeriodInput:
    """One period's input. ``reads``: the API objects (listed, or from watches); ``core``: for API discovery;
    ``parsed``: remembers each object's parse by its resourceVersion, so an unchanged object is not parsed again."""
    parsed = parsed if parsed is not None else ParseMemo()
    pools: dict[str, AcceleratorPool] = {}
    invalid_pools, invalid_services = [], []
    for body in reads.objects("pools"):
        pool, problems = parsed.pool(body)
        if pool is None:
            invalid_pools.append((body, problems))
        else:
            pools[pool.name] = pool
    valid, listed = [], set()
    for body in reads.objects("services"):
        if body["metadata"].get("deletionTimestamp"):
            continue
        listed.add(f"{body['metadata'].get('namespace', 'default')}/{body['metadata']['name']}")
        svc, problems = parsed.service(body)
        problems = problems + (reference_problems(svc, set(pools)) if svc else [])
        if svc is None or problems:
            invalid_services.append((body, problems))
        else:
            valid.append((body, svc))
    parsed.end_period()

    view = read_cluster(reads.objects("nodes"), reads.objects("deployments"), reads.objects("pods"),
                        list(pools.values()))
    # One scalar per PromQL: electricity prices and carbon intensities are read the same way (and returned in
    # obs.prices_usd_per_kwh keyed by query; a carbon query's value there is in gCO2/kWh).
    price_queries = [p.spec.cost.electricity.prometheus.query for p in pools.values()
                     if p.spec.cost.electricity.prometheus is not None]
    price_queries += [q for q in (_carbon_query(p) for p in pools.values()) if q and q not in price_queries]
    obs = source.observe([ServiceRef.of(s) for _, s in valid], view.topology, price_queries)
    pool_states, fallbacks = pool_states_now(pools, view, obs)
    current: dict[str, dict[str, CurrentPlacement]] = {s.key: {} for _, s in valid}
    for (key, pool), r in view.deployments.items():
        if key in current:
            current[key][pool] = CurrentPlacement(r.replicas, r.tensor_parallel, r.ready)
    templates: dict[str, dict[str, str | None]] = {s.key: {} for _, s in valid}
    for (key, pool), r in view.deployments.items():
        if key in templates:
            templates[key][pool] = r.template_hash
    services = [ObservedService(body, ServiceInput.of(svc, current[svc.key],
                                                      obs.services.get(svc.key) if obs.available else None,
                                                      frozenset(view.unschedulable_services.get(svc.key, ()))),
                                templates[svc.key])
                for body, svc in valid]
    # No finalizer holds a deleted service for the operator, and not every cluster runs the garbage collector
    # its owner references count on: what kilowatt placed for a service that is gone, it removes.
    served = served_api_versions(core)
    routed = read_routing_objects(reads, served)

    def gone(key: str) -> bool:
        return key not in listed and (not namespaces or key.split("/", 1)[0] in namespaces)

    orphans = [(key, key.split("/", 1)[0], r.name, "apps/v1", "Deployment")
               for (key, _), r in view.deployments.items() if gone(key)]
    orphans += [(key, key.split("/", 1)[0], name, api_version, kind)
                for key, objects in routed.items() if gone(key) for api_version, kind, name in sorted(objects)]
    return PeriodInput(pools, pool_states, services, view, obs, invalid_pools, invalid_services, orphans, served,
                       routed, fallbacks)


class ParseMemo:
    """Each AcceleratorPool's and InferenceService's parse (model and problems), by uid and resourceVersion: at
    steady load nothing is written to them, and validating 1,000 specs every period is most of a period's reading.
    Objects not seen in a period are forgotten at its end."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str], tuple[Any, list[Problem]]] = {}
        self._seen: set[tuple[str, str]] = set()

    def _get(self, body: dict, parse) -> tuple[Any, list[Problem]]:
        meta = body.get("metadata") or {}
        key = (f"{body.get('kind')}/{meta.get('namespace') or ''}/{meta.get('name')}/{meta.get('uid')}",
               str(meta.get("resourceVersion") or ""))
        self._seen.add(key)
        if not key[1]:
            return parse(body)
        if key not in self._memo:
            self._memo[key] = parse(body)
        model, problems = self._memo[key]
        return model, list(problems)

    def pool(self, body: dict) -> tuple[AcceleratorPool | None, list[Problem]]:
        return self._get(body, parse_pool)

    def service(self, body: dict):
        return self._get(body, parse_service)

    def end_period(self) -> None:
        """Forget every parse not asked for since the last call: deleted or changed objects."""
        self._memo = {k: v for k, v in self._memo.items() if k in self._seen}
        self._seen = set()


def served_api_versions(core: Any) -> set[str]:
    """Every "group/version" the API server serves (one discovery request): which routing modes can work here."""
    from kubernetes import client

    groups = client.ApisApi(core.api_client).get_api_versions().groups or []
    return {v.group_version for g in groups for v in g.versions or []}


def read_routing_objects(reads: Reads, served: set[str]) -> dict[str, dict[tuple[str, str, str], str | None]]:
    """kilowatt's Services, HTTPRoutes and InferencePools, by the service they route to, each with the hash kilowatt
    stamped on it when it applied it."""
    out: dict[str, dict[tuple[str, str, str], str | None]] = {}
    objects = reads.objects("v1/Service")
    for kind in (HTTP_ROUTE, INFERENCE_POOL):
        if kind.api_version in served:
            objects += reads.objects(f"{kind.api_version}/{kind.kind}")
    for o in objects:
        meta = o["metadata"]
        labels = meta.get("labels") or {}
        if not labels.get(LABEL_SERVICE):
            continue
        out.setdefault(f"{meta['namespace']}/{labels[LABEL_SERVICE]}", {})[(o["apiVersion"], o["kind"], meta["name"])] = \
            (meta.get("annotations") or {}).get(ANNOTATION_APPLIED)
    return out


def pool_states_now(pools: dict[str, AcceleratorPool], view: ClusterView,
                    obs: Observations) -> tuple[dict[str, PoolState], dict[str, str]]:
    """Each pool's usable GPUs and this period's price; and, per pool on a fallback price, why."""
    out, fallbacks = {}, {}
    for name, pool in pools.items():
        gpus = view.gpus_by_pool.get(name, 0)
        if name in view.unschedulable_pools:
            # Pods wait for room the nodes do not have: the pool is full at what is scheduled now.
            gpus = min(gpus, view.scheduled_gpus_by_pool.get(name, 0))
        price = None
        prom = pool.spec.cost.electricity.prometheus
        if prom is not None:
            price = obs.prices_usd_per_kwh.get(prom.query)
            if price is None:
                price = prom.fallback_usd_per_kwh
                why = obs.error if not obs.available else f"the price query returned no sample ({prom.query})"
                fallbacks[name] = f"{why}; using spec.cost.electricity.prometheus.fallbackUsdPerKWh ${price:g}/kWh"
        carbon = None
        query = _carbon_query(pool)
        if query is not None:
            carbon = obs.prices_usd_per_kwh.get(query)
            if carbon is None:
                fallback = pool.spec.cost.carbon.prometheus.fallback_grams_co2_per_kwh
                why = obs.error if not obs.available else f"the carbon query returned no sample ({query})"
                note = f"{why}; using spec.cost.carbon.prometheus.fallbackGramsCO2PerKWh {fallback:g} g/kWh"
                fallbacks[name] = f"{fallbacks[name]}; {note}" if name in fallbacks else note
        out[name] = pool_state(pool, gpus, price, carbon)
    return out, fallbacks


def _carbon_query(pool: AcceleratorPool) -> str | None:
    carbon = pool.spec.cost.carbon
    return carbon.prometheus.query if carbon is not None and carbon.prometheus is not None else None
