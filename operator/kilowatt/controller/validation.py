"""What the CRD schema cannot check, as problems a user can act on: the field, what is wrong, how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}; {self.fix}"


def parse_service(body: dict) -> tuple[InferenceService | None, list[Problem]]:
    try:
        return InferenceService.model_validate(_plain(body)), []
    except ValidationError as exc:
        return None, [_problem(err) for err in exc.errors()]


def parse_pool(body: dict) -> tuple[AcceleratorPool | None, list[Problem]]:
    try:
        return AcceleratorPool.model_validate(_plain(body)), []
    except ValidationError as exc:
        return None, [_problem(err) for err in exc.errors()]


def _plain(body: dict) -> dict:
    doc = {k: body.get(k) for k in ("apiVersion", "kind", "metadata", "spec")}
    meta = dict(doc.get("metadata") or {})
    doc["metadata"] = {k: meta[k] for k in ("name", "namespace", "generation") if k in meta}
    return doc


_FIXES = {
    "spec.replicas": "set replicas.min at most replicas.max",
    "spec.cost.electricity.timeOfUse": "make the periods cover 00:00-24:00 once, with no gap and no overlap",
    "spec.cost.electricity.timeOfUse.timeZone": "use an IANA time zone such as Europe/Berlin",
    "spec.cost.electricity": "set exactly one of flatUsdPerKWh, timeOfUse, prometheus",
}


def _problem(err: dict) -> Problem:
    where = ".".join(str(p) for p in err.get("loc", ()))
    message = err.get("msg", "").removeprefix("Value error, ")
    return Problem(where, message, _FIXES.get(where, "see `kubectl explain` for the field"))


def reference_problems(service: InferenceService, pool_names: set[str]) -> list[Problem]:
    problems = []
    for i, name in enumerate(service.spec.pools):
        if name not in pool_names:
            known = ", ".join(sorted(pool_names)) or "none yet"
            problems.append(Problem(f"spec.pools[{i}]", f"no AcceleratorPool named {name!r}",
                                    f"use one of: {known}, or create it"))
    for i, profile in enumerate(service.spec.profiles):
        if profile.pool not in pool_names:
            problems.append(Problem(f"spec.profiles[{i}].pool", f"no AcceleratorPool named {profile.pool!r}",
                                    "name an existing pool"))
    return problems
