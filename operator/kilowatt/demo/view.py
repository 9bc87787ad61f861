"""What the demo shows while it runs: a live terminal view (rich), or plain log lines (``--no-tui``)."""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kilowatt.slo import within_slo
BLOCKS = " ▁▂▃▄▅▆▇█"
HISTORY = 72  # periods shown in the sparklines


@dataclass
class PoolFrame:
    replicas: int  # in the Deployment (what kilowatt asked for)
    serving: int  # ready in the twin
    tensor_parallel: int
    price_usd_per_kwh: float


@dataclass
class Frame:
    at: datetime
    fraction: float
    speed: float  # simulated seconds per wall second, achieved
    load_rps: float
    waiting: int
    pools: dict[str, PoolFrame]
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    cost_usd_per_hour: float
    cost_usd: float
    energy_kwh: float
    slo_attainment: float | None
    decisions: int
    deployment_changes: int


@dataclass
class Header:
    service: str
    slo_ttft_ms: float
    slo_tpot_ms: float
    kubeconfig: str
    workload: str
    report: str | None


def sparkline(values: list[float], top: float | None = None) -> str:
    if not values:
        return ""
    top = top if top is not None else max(values)
    if top <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, round(v / top * (len(BLOCKS) - 1)))] for v in values)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


@dataclass
class View:
    header: Header
    out: TextIO = field(default_factory=lambda: sys.stdout)
    decisions: deque = field(default_factory=lambda: deque(maxlen=8))
    load: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    replicas: dict = field(default_factory=dict)
    last: Frame | None = None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def decision(self, at: datetime, message: str) -> None:
        self.decisions.append((at, message))

    def update(self, frame: Frame) -> None:
        self.last = frame
        self.load.append(frame.load_rps)
        for name, pool in frame.pools.items():
            self.replicas.setdefault(name, deque(maxlen=HISTORY)).append(pool.replicas)

    @staticmethod
    def slo_mark(frame: Frame, header: Header) -> str:
        if frame.ttft_p95_ms is None or frame.tpot_p95_ms is None:
            return "no completions"
        ok = within_slo(frame.ttft_p95_ms, frame.tpot_p95_ms, header.slo_ttft_ms, header.slo_tpot_ms)
        return "within SLO" if ok else "ABOVE SLO"


class PlainView(View):
    """One line per simulated ``every_seconds`` and one per decision: for scripts, CI and logs."""

    def __init__(self, header: Header, out: TextIO | None = None, every_seconds: float = 1800.0) -> None:
        super().__init__(header, out or sys.stdout)
        self.every = every_seconds
        self._next: datetime | None = None

    def decision(self, at: datetime, message: str) -> None:
        super().decision(at, message)
        self.say(f"{at:%H:%M} decision: {message}")

    def update(self, frame: Frame) -> None:
        super().update(frame)
        if self._next is not None and frame.at < self._next and frame.fraction < 1.0:
            return
        from datetime import timedelta

        self._next = frame.at + timedelta(seconds=self.every)
        pools = " ".join(f"{n}={p.serving}/{p.replicas}" + (f"(tp{p.tensor_parallel})" if p.tensor_parallel > 1
                                                             else "") + f"@${p.price_usd_per_kwh:.2f}/kWh"
                         for n, p in frame.pools.items())
        slo = "-" if frame.slo_attainment is None else f"{frame.slo_attainment:.2%}"
        self.say(f"{frame.at:%Y-%m-%d %H:%M} {frame.fraction:4.0%} load {frame.load_rps:6.1f} req/s "
                 f"waiting {frame.waiting:4d} | replicas ready/asked {pools} | TTFT p95 {_ms(frame.ttft_p95_ms)} "
                 f"TPOT p95 {_ms(frame.tpot_p95_ms)} ({self.slo_mark(frame, self.header)}) | "
                 f"${frame.cost_usd_per_hour:.2f}/h, ${frame.cost_usd:.2f} so far, SLO {slo} | {frame.speed:.0f}x")


class LiveView(View):
    """A full-screen-ish panel redrawn a few times a second."""

    def __init__(self, header: Header, out: TextIO | None = None) -> None:
        super().__init__(header, out or sys.stdout)
        self.console = Console(file=self.out)
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.update(self._render(), refresh=True)
        self.live.stop()

    def say(self, text: str) -> None:
        self.console.print(text)

    def decision(self, at: datetime, message: str) -> None:
        super().decision(at, message)
        self.live.update(self._render())

    def update(self, frame: Frame) -> None:
        super().update(frame)
        self.live.update(self._render())

    def _render(self) -> Panel:
        h, f = self.header, self.last
        lines: list = [Text.from_markup(
            f"[bold]{h.service}[/] · {h.workload} · SLO p95 TTFT {h.slo_ttft_ms:g} ms, TPOT {h.slo_tpot_ms:g} ms"),
            Text(f"kubectl: export KUBECONFIG={h.kubeconfig}; kubectl get inferenceservices,acceleratorpools,"
                 "deployments -A", style="dim")]
        if f is None:
            lines.append(Text("starting…"))
            return Panel(Group(*lines), title="kilowatt demo")
        bar = "█" * int(f.fraction * 40)
        lines.append(Text.from_markup(
            f"[bold]{f.at:%a %Y-%m-%d %H:%M %Z}[/]  [{bar:40}] {f.fraction:4.0%}  running at {f.speed:.0f}× real time"))
        table = Table(expand=False, box=None, padding=(0, 2))
        for col in ("pool", "replicas asked", "serving", "GPUs each", "electricity $/kWh", "replicas over time"):
            table.add_column(col, justify="right" if col not in ("pool", "replicas over time") else "left")
        top = max([max(v, default=0) for v in self.replicas.values()] + [1])
        for name, p in f.pools.items():
            table.add_row(name, str(p.replicas), str(p.serving), str(p.tensor_parallel),
                          f"{p.price_usd_per_kwh:.3f}", sparkline(list(self.replicas.get(name, [])), top))
        lines.append(table)
        slo_style = "green" if self.slo_mark(f, h) == "within SLO" else "red"
        attain = "-" if f.slo_attainment is None else f"{f.slo_attainment:.2%}"
        lines.append(Text.from_markup(
            f"load [bold]{f.load_rps:6.1f}[/] req/s (waiting {f.waiting})  {sparkline(list(self.load))}"))
        lines.append(Text.from_markup(
            f"TTFT p95 [{slo_style}]{_ms(f.ttft_p95_ms)}[/] / {h.slo_ttft_ms:g} ms   TPOT p95 "
            f"[{slo_style}]{_ms(f.tpot_p95_ms)}[/] / {h.slo_tpot_ms:g} ms   requests within SLO so far {attain}"))
        lines.append(Text.from_markup(
            f"cost now [bold]${f.cost_usd_per_hour:.2f}/h[/]   so far ${f.cost_usd:.2f}, {f.energy_kwh:.1f} kWh   "
            f"decisions {f.decisions}, Deployment changes {f.deployment_changes}"))
        lines.append(Text("decisions (newest last):", style="bold"))
        for at, message in self.decisions:
            lines.append(Text(f"{at:%H:%M} {message}", overflow="ellipsis", no_wrap=False))
        return Panel(Group(*lines), title="kilowatt demo · Ctrl-C stops and writes the report")
