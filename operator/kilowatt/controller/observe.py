"""Observe: the API objects, the cluster's nodes, Deployments and Pods, and the metrics -> one period's input.

Reads only; writes nothing. Everything the rest of the period needs about a service is built here once
(``ObservedService``) and carried through deciding, accounting and reporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kilowatt.api.v1alpha1 import GROUP, VERSION, AcceleratorPool
from kilowatt.controller.actuator import LABEL_MANAGED, LABEL_SERVICE
from kilowatt.controller.cluster import ClusterView, read_cluster
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


def list_objects(custom: Any, plural: str, namespaces: tuple[str, ...] = ()) -> list[dict]:
    if plural == "acceleratorpools" or not namespaces:
        return custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
    items = []
    for ns in namespaces:
        items += custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
    return items


def observe(core: Any, apps: Any, custom: Any, source: MetricSource, namespaces: tuple[str, ...] = ()) -> PeriodInput:
    pools: dict[str, AcceleratorPool] = {}
    invalid_pools, invalid_services = [], []
    for body in list_objects(custom, "acceleratorpools"):
        pool, problems = parse_pool(body)
        if pool is None:
            invalid_pools.append((body, problems))
        else:
            pools[pool.name] = pool
    valid, listed = [], set()
    for body in list_objects(custom, "inferenceservices", namespaces):
        if body["metadata"].get("deletionTimestamp"):
            continue
        listed.add(f"{body['metadata'].get('namespace', 'default')}/{body['metadata']['name']}")
        svc, problems = parse_service(body)
        problems += reference_problems(svc, set(pools)) if svc else []
        if svc is None or problems:
            invalid_services.append((body, problems))
        else:
            valid.append((body, svc))

    view = read_cluster(core, apps, list(pools.values()))
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
    routed = read_routing_objects(core, custom, served)

    def gone(key: str) -> bool:
        return key not in listed and (not namespaces or key.split("/", 1)[0] in namespaces)

    orphans = [(key, key.split("/", 1)[0], r.name, "apps/v1", "Deployment")
               for (key, _), r in view.deployments.items() if gone(key)]
    orphans += [(key, key.split("/", 1)[0], name, api_version, kind)
                for key, objects in routed.items() if gone(key) for api_version, kind, name in sorted(objects)]
    return PeriodInput(pools, pool_states, services, view, obs, invalid_pools, invalid_services, orphans, served,
                       routed, fallbacks)


def served_api_versions(core: Any) -> set[str]:
    """Every "group/version" the API server serves (one discovery request): which routing modes can work here."""
    from kubernetes import client

    groups = client.ApisApi(core.api_client).get_api_versions().groups or []
    return {v.group_version for g in groups for v in g.versions or []}


def read_routing_objects(core: Any, custom: Any,
                         served: set[str]) -> dict[str, dict[tuple[str, str, str], str | None]]:
    """kilowatt's Services, HTTPRoutes and InferencePools, by the service they route to, each with the hash kilowatt
    stamped on it when it applied it."""
    out: dict[str, dict[tuple[str, str, str], str | None]] = {}
    selector = f"{LABEL_MANAGED}=kilowatt,{LABEL_SERVICE}"
    items = [("v1", "Service", s.metadata.namespace, s.metadata.labels or {}, s.metadata.name,
              (s.metadata.annotations or {}).get(ANNOTATION_APPLIED))
             for s in core.list_service_for_all_namespaces(label_selector=selector).items]
    for kind in (HTTP_ROUTE, INFERENCE_POOL):
        if kind.api_version in served:
            group, version = kind.api_version.split("/")
            for o in custom.list_cluster_custom_object(group, version, kind.plural, label_selector=selector)["items"]:
                meta = o["metadata"]
                items.append((kind.api_version, kind.kind, meta["namespace"], meta.get("labels") or {}, meta["name"],
                              (meta.get("annotations") or {}).get(ANNOTATION_APPLIED)))
    for api_version, kind_name, namespace, labels, name, digest in items:
        out.setdefault(f"{namespace}/{labels[LABEL_SERVICE]}", {})[(api_version, kind_name, name)] = digest
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
