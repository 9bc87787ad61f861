"""The twin's report: PNG plots and one self-contained HTML page (the plots inlined) in a directory."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402

from kilowatt.twin.simulate import PolicyResult  # noqa: E402

SECONDS_PER_HOUR = 3600.0


def _hours(result: PolicyResult) -> list[float]:
    return [s.t_s / SECONDS_PER_HOUR for s in result.samples]


def write_report(directory: str | Path, results: list[PolicyResult], title: str, slo_ttft_ms: float,
                 slo_tpot_ms: float, summary: dict) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []
    focus = next((r for r in results if r.name == "kilowatt"), results[0])

    fig, ax = plt.subplots(figsize=(10, 4))
    hours = _hours(focus)
    pools = sorted({p for s in focus.samples for p in s.replicas})
    if pools:  # a run stopped before its first period has nothing to draw
        ax.stackplot(hours, *[[s.gpus.get(p, 0) for s in focus.samples] for p in pools], labels=pools,
                     alpha=0.6, step="post")
    ax.set_ylabel("GPUs held (replicas × tensor-parallel degree)")
    ax.set_xlabel("hours")
    ax2 = ax.twinx()
    ax2.plot(hours, [s.arrivals_rps for s in focus.samples], color="black", linewidth=0.8, label="load")
    ax2.set_ylabel("requests / s")
    if pools:
        ax.legend(loc="upper left")
    ax.set_title(f"{focus.name}: load and GPUs per pool")
    figures.append(("load-and-replicas.png", _save(fig, out / "load-and-replicas.png")))

    fig, ax = plt.subplots(figsize=(10, 4))
    for r in results:
        ax.plot(_hours(r), [s.cost_usd_per_hour for s in r.samples], label=r.name, linewidth=1)
    ax.set_ylabel("USD per hour")
    ax.set_xlabel("hours")
    ax.set_title("cost over time (hardware + energy)")
    ax.legend()
    figures.append(("cost-over-time.png", _save(fig, out / "cost-over-time.png")))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for r in results:
        a1.plot(_hours(r), [(s.ttft_p95_s or float("nan")) * 1000 for s in r.samples], label=r.name, linewidth=0.8)
        a2.plot(_hours(r), [(s.tpot_p95_s or float("nan")) * 1000 for s in r.samples], label=r.name, linewidth=0.8)
    for ax, target, name in ((a1, slo_ttft_ms, "TTFT"), (a2, slo_tpot_ms, "TPOT")):
        ax.axhline(target, color="red", linestyle="--", label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("hours")
        ax.set_ylabel(f"{name} p95 per period, ms")
        ax.set_title(f"{name} p95 against the SLO")
    a1.legend(fontsize=7)
    figures.append(("latency-vs-slo.png", _save(fig, out / "latency-vs-slo.png")))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    names = [r.name for r in results]
    a1.bar(names, [r.hardware_usd for r in results], label="hardware")
    a1.bar(names, [r.energy_usd for r in results], bottom=[r.hardware_usd for r in results], label="energy")
    a1.set_ylabel("USD")
    a1.set_title("total cost")
    a1.legend()
    a2.bar(names, [r.slo_attainment * 100 for r in results], color="tab:green")
    a2.axhline(99, color="red", linestyle="--")
    a2.set_ylim(min(90.0, min(r.slo_attainment * 100 for r in results) - 1), 100.5)
    a2.set_ylabel("% requests within TTFT and TPOT")
    a2.set_title("SLO attainment")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30)
    figures.append(("policy-comparison.png", _save(fig, out / "policy-comparison.png")))

    rows = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td>{p['costUsd']:.2f}</td><td>{p['hardwareUsd']:.2f}</td>"
        f"<td>{p['energyUsd']:.2f}</td><td>{p['energyKwh']:.1f}</td><td>{p['sloAttainment']:.2%}</td>"
        f"<td>{p['ttftP95Ms'] if p['ttftP95Ms'] is not None else '-'}</td>"
        f"<td>{p['tpotP95Ms'] if p['tpotP95Ms'] is not None else '-'}</td>"
        f"<td>{p['mixedPlacementHours']:.2f}</td><td>{p['strandedByRoutingUsd']:.2f}</td>"
        f"<td>{p.get('co2Kg', 0.0):.1f}</td><td>{p.get('co2KgPerDay') or 0.0:.1f}</td><td>{p.get('ownedHardwareUsd', 0.0):.2f}</td></tr>"
        for p in summary["policies"])
    routing = summary.get("routing")
    note = {
        "service": "Routing <b>service</b>: one ClusterIP Service, so every serving replica gets an equal share; on "
                   "a mixed placement only replicas × the slowest replica's capacity is usable, and the rest of "
                   "what it costs is <i>stranded</i>.",
        "weighted": "Routing <b>weighted</b>: an HTTPRoute weighted by capacity reaches every replica's capacity; "
                    "nothing is stranded by routing.",
        "inferencepool": "Routing <b>inferencepool</b>: pools by HTTPRoute weight, then each pool's replicas in "
                         "turn; nothing is stranded by routing.",
    }.get(routing, "")
    header = ("policy", "cost USD", "hardware USD", "energy USD", "energy kWh", "SLO attainment", "TTFT p95 ms",
              "TPOT p95 ms", "mixed placement h", "stranded by routing USD", "CO2 kg", "CO2 kg/day",
              "owned hardware USD (paid either way)")
    return _write_page(out, title, header, rows, note, figures, summary)


def _write_page(out: Path, title: str, header: tuple[str, ...], rows: str, note: str,
                figures: list[tuple[str, str]], summary: dict) -> Path:
    """report.html (the table, a note, the plots inlined, the raw result) and result.json in ``out``."""
    images = "".join(
        f'<h2>{html.escape(name.removesuffix(".png").replace("-", " "))}</h2>'
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}"/>' for name, data in figures)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><tr>{head}</tr>{rows}</table>
<p>{note}</p>
{images}
<h2>raw result</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
</body></html>
"""
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "result.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return out / "report.html"


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_fleet_report(directory: str | Path, results: list, title: str, summary: dict) -> Path:
    """The fleet's page (kilowatt.twin.fleet): GPUs per pool over time, cost over time, SLO per service and
    GPU-hours per pool for every policy."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, str]] = []
    shown = [r for r in results if r.name in ("kilowatt", "kilowatt-alone")] or results[:1]
    pools = sorted({p for r in results for s in r.samples for p in s.gpus})

    fig, axes = plt.subplots(1, len(shown), figsize=(7 * len(shown), 4), squeeze=False)
    for ax, r in zip(axes[0], shown):
        hours = [s.t_s / SECONDS_PER_HOUR for s in r.samples]
        if pools and r.samples:
            ax.stackplot(hours, *[[s.gpus.get(p, 0) for s in r.samples] for p in pools], labels=pools, alpha=0.6,
                         step="post")
            ax.legend(loc="upper left")
        ax.set_ylabel("GPUs held, all services")
        ax.set_xlabel("hours")
        ax2 = ax.twinx()
        ax2.plot(hours, [s.arrivals_rps for s in r.samples], color="black", linewidth=0.6)
        ax2.set_ylabel("requests / s, all services")
        ax.set_title(f"{r.name}: GPUs per pool and the fleet's load")
    figures.append(("gpus-per-pool.png", _save(fig, out / "gpus-per-pool.png")))

    fig, ax = plt.subplots(figsize=(10, 4))
    for r in results:
        ax.plot([s.t_s / SECONDS_PER_HOUR for s in r.samples], [s.cost_usd_per_hour for s in r.samples],
                label=r.name, linewidth=1)
    ax.set_ylabel("USD per hour")
    ax.set_xlabel("hours")
    ax.set_title("the fleet's cost over time (hardware + energy, owned pools included)")
    ax.legend()
    figures.append(("cost-over-time.png", _save(fig, out / "cost-over-time.png")))

    services = summary["services"]
    fig, ax = plt.subplots(figsize=(max(10, len(services) * 1.1), 4.5))
    width = 0.8 / max(len(results), 1)
    lowest = 100.0
    for i, r in enumerate(results):
        by = {s.name: s.slo_attainment * 100 for s in r.services}
        values = [by.get(k, float("nan")) for k in services]
        lowest = min([lowest, *[v for v in values if v == v]])
        ax.bar([j + i * width for j in range(len(services))], values, width, label=r.name)
    ax.axhline(99, color="red", linestyle="--")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(services))])
    ax.set_xticklabels([k.split("/")[-1] for k in services], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(max(0.0, min(90.0, lowest - 1)), 100.5)
    ax.set_ylabel("% requests within TTFT and TPOT")
    ax.set_title("SLO attainment per service")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    figures.append(("slo-per-service.png", _save(fig, out / "slo-per-service.png")))

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    names = [r.name for r in results]
    rows = {p["name"]: p for p in summary["policies"]}
    a1.bar(names, [rows[n]["hardwareUsd"] for n in names], label="hardware")
    a1.bar(names, [rows[n]["energyUsd"] for n in names], bottom=[rows[n]["hardwareUsd"] for n in names],
           label="energy")
    a1.set_ylabel("USD")
    a1.set_title("total cost")
    a1.legend()
    bottom = [0.0] * len(names)
    for p in pools:
        values = [rows[n]["gpuHours"].get(p, 0.0) for n in names]
        a2.bar(names, values, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, values)]
    a2.set_ylabel("GPU-hours")
    a2.set_title("GPU-hours per pool")
    a2.legend()
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30)
    figures.append(("policy-comparison.png", _save(fig, out / "policy-comparison.png")))

    table = "".join(
        f"<tr><td>{html.escape(p['name'])}</td><td>{p['costUsd']:.2f}</td><td>{p['hardwareUsd']:.2f}</td>"
        f"<td>{p['energyUsd']:.2f}</td><td>{p['energyKwh']:.1f}</td><td>{p['co2Kg']:.1f}</td>"
        f"<td>{p['sloAttainment']:.2%}</td><td>{p['worstServiceSloAttainment']:.2%}</td>"
        f"<td>{html.escape(', '.join(f'{k} {v:.1f}' for k, v in p['gpuHours'].items()))}</td></tr>"
        for p in summary["policies"])
    header = ("policy", "cost USD", "hardware USD", "energy USD", "energy kWh", "CO2 kg",
              "SLO attainment (all requests)", "worst service", "GPU-hours per pool")
    note = ("Owned pools' hardware is paid whether used or not, under every policy; a replica a service asks for while "
            "the other services hold its pool stays Pending (neither serves nor is paid for).")
    return _write_page(out, title, header, table, note, figures, summary)
