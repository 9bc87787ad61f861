"""Cost arithmetic, power curve and prices. The kWh/Wh slip is the bug this project must never have."""

from datetime import datetime, timezone

import pytest

from kilowatt.economics import FlatPrice, PoolEconomics, PowerCurve, PriceSeries, TimeOfUsePrice
from kilowatt.economics.cost import energy_usd_per_hour
from kilowatt.economics.prices import price_source_from_spec
from kilowatt.state import load_objects

from tests.paths import EXAMPLES

NOON = datetime(2026, 7, 1, 12, tzinfo=timezone.utc)


def test_one_kilowatt_for_an_hour_at_ten_cents_costs_ten_cents():
    assert energy_usd_per_hour(it_watts=1000, pue=1.0, usd_per_kwh=0.10) == pytest.approx(0.10)


def test_pue_scales_energy_not_hardware():
    econ = PoolEconomics(2.0, 1.5, PowerCurve(100, 700, 1.0), FlatPrice(0.2))
    cost = econ.replica_cost(gpus=2, utilisation=1.0, at=NOON)
    assert cost.hardware_usd_per_hour == pytest.approx(4.0)
    # 2 GPUs x 700 W = 1.4 kW x 1.5 PUE = 2.1 kW x $0.2/kWh = $0.42/h
    assert cost.energy_usd_per_hour == pytest.approx(0.42)
    assert cost.power_watts == pytest.approx(2100)
    assert cost.total_usd_per_hour == pytest.approx(4.42)


def test_a_watt_hour_slip_would_be_visible():
    # 450 W at $0.41/kWh must cost about $0.18/h, not $184.50/h (Wh) nor $0.000185/h (MWh).
    cost = PoolEconomics(0.0, 1.0, PowerCurve(0, 450, 1.0), FlatPrice(0.41)).replica_cost(1, 1.0, NOON)
    assert 0.18 < cost.energy_usd_per_hour < 0.19


def test_power_is_sublinear_between_idle_and_board():
    curve = PowerCurve(105, 700, 0.33)
    assert curve.watts(0) == 105 and curve.watts(1) == 700
    assert curve.watts(0.5) > (105 + 700) / 2  # most power is drawn at low load (ML.ENERGY)
    assert curve.watts(2.0) == 700 and curve.watts(-1) == 105


def test_power_curve_rejects_idle_above_board():
    with pytest.raises(ValueError, match="idle"):
        PowerCurve(800, 700)


def test_time_of_use_follows_the_local_clock_across_daylight_saving():
    prices = TimeOfUsePrice("America/Los_Angeles", ((0, 960, 0.14), (960, 1260, 0.41), (1260, 1440, 0.14)))
    # 17:00 local is 00:00 UTC next day in summer (PDT, UTC-7) and 01:00 UTC in winter (PST, UTC-8).
    assert prices.usd_per_kwh(datetime(2026, 7, 2, 0, 0, tzinfo=timezone.utc)) == 0.41
    assert prices.usd_per_kwh(datetime(2026, 1, 2, 1, 0, tzinfo=timezone.utc)) == 0.41
    assert prices.usd_per_kwh(datetime(2026, 1, 2, 6, 0, tzinfo=timezone.utc)) == 0.14
    assert "16:00-21:00" in prices.describe(datetime(2026, 7, 2, 0, 0, tzinfo=timezone.utc))


def test_wrap_around_period_covers_midnight():
    prices = TimeOfUsePrice("UTC", ((420, 1320, 0.3), (1320, 420, 0.1)))
    assert prices.usd_per_kwh(datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc)) == 0.1
    assert prices.usd_per_kwh(datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)) == 0.1
    assert prices.usd_per_kwh(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)) == 0.3


def test_price_series_steps_at_each_sample():
    t0, t1 = datetime(2024, 1, 1, 0, tzinfo=timezone.utc), datetime(2024, 1, 1, 1, tzinfo=timezone.utc)
    series = PriceSeries((t0, t1), (0.05, 1.50))
    assert series.usd_per_kwh(datetime(2023, 12, 31, tzinfo=timezone.utc)) == 0.05
    assert series.usd_per_kwh(datetime(2024, 1, 1, 0, 59, tzinfo=timezone.utc)) == 0.05
    assert series.usd_per_kwh(t1) == 1.50


def test_example_pool_prices_come_from_the_spec():
    pools, _ = load_objects([EXAMPLES])
    by_name = {p.name: p for p in pools}
    tou = price_source_from_spec(by_name["rtx4090"].spec.cost.electricity)
    assert tou.usd_per_kwh(datetime(2026, 7, 2, 1, 30, tzinfo=timezone.utc)) == 0.41  # 18:30 PDT
    assert tou.usd_per_kwh(datetime(2026, 7, 2, 10, 0, tzinfo=timezone.utc)) == 0.14  # 03:00 PDT
    assert price_source_from_spec(by_name["h100"].spec.cost.electricity).usd_per_kwh(NOON) == 0.10


def test_a_tonne_is_a_million_grams_and_carbon_is_priced_not_paid():
    from kilowatt.economics import FlatCarbon
    # 1 GPU at 450 W, PUE 1.2 = 0.54 kW x 400 g/kWh = 216 g/h; at $100/t that is $0.0216/h.
    econ = PoolEconomics(1.0, 1.2, PowerCurve(0, 450, 1.0), FlatPrice(0.10), carbon=FlatCarbon(400),
                         usd_per_tonne_co2=100.0)
    cost = econ.replica_cost(1, 1.0, NOON)
    assert cost.co2_grams_per_hour == pytest.approx(216.0)
    assert cost.carbon_usd_per_hour == pytest.approx(0.0216)
    assert cost.total_usd_per_hour == pytest.approx(1.0 + 0.054)  # what is paid: no carbon in it
    assert cost.objective_usd_per_hour == pytest.approx(1.0 + 0.054 + 0.0216)


def test_an_owned_replicas_marginal_cost_is_its_energy_above_idle():
    curve = PowerCurve(68, 450, 1.0)
    owned = PoolEconomics(0.10, 1.4, curve, FlatPrice(0.20), owned=True)
    rented = PoolEconomics(0.10, 1.4, curve, FlatPrice(0.20))
    marginal = owned.marginal_cost(2, 0.5, NOON)
    # 2 GPUs x (259 - 68) W above idle = 382 W x 1.4 = 534.8 W at the wall x $0.20/kWh
    assert marginal.power_watts == pytest.approx(2 * (259 - 68) * 1.4)
    assert marginal.energy_usd_per_hour == pytest.approx(2 * (259 - 68) * 1.4 / 1000 * 0.20)
    assert marginal.hardware_usd_per_hour < 0.001  # sunk, but never quite free
    assert owned.replica_cost(2, 0.5, NOON) == rented.replica_cost(2, 0.5, NOON)  # what reports charge
    assert rented.marginal_cost(2, 0.5, NOON) == rented.replica_cost(2, 0.5, NOON)
    assert owned.idle_cost(3, NOON).hardware_usd_per_hour == pytest.approx(0.30)  # paid, used or not
    assert owned.idle_cost(3, NOON).power_watts == pytest.approx(3 * 68 * 1.4)
    assert rented.idle_cost(3, NOON).total_usd_per_hour == 0.0


def test_carbon_sources_from_the_spec():
    from kilowatt.api.v1alpha1 import PoolCost
    from kilowatt.economics import carbon_source_from_spec
    hourly = PoolCost.model_validate({"usdPerGPUHour": 1, "electricity": {"flatUsdPerKWh": 0.1}, "carbon": {
        "hourly": {"timeZone": "Europe/Berlin", "gramsCO2PerKWh": list(range(24))}}})
    # NOON UTC in July is 14:00 in Berlin.
    assert carbon_source_from_spec(hourly).grams_co2_per_kwh(NOON) == 14
    prom = PoolCost.model_validate({"usdPerGPUHour": 1, "electricity": {"flatUsdPerKWh": 0.1}, "carbon": {
        "prometheus": {"query": "grid_intensity", "fallbackGramsCO2PerKWh": 350}}})
    assert carbon_source_from_spec(prom).grams_co2_per_kwh(NOON) == 350
    assert carbon_source_from_spec(prom, 120.0).grams_co2_per_kwh(NOON) == 120  # this period's reading
    legacy = PoolCost.model_validate({"usdPerGPUHour": 1, "electricity": {"flatUsdPerKWh": 0.1,
                                                                         "gramsCO2PerKWh": 300}})
    assert carbon_source_from_spec(legacy).grams_co2_per_kwh(NOON) == 300
    none = PoolCost.model_validate({"usdPerGPUHour": 1, "electricity": {"flatUsdPerKWh": 0.1}})
    assert carbon_source_from_spec(none) is None
