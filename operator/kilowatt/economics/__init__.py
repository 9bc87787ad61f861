"""What a replica costs: hardware by the hour plus electricity at the price of the hour.

Pure code: no Kubernetes, no Prometheus. Units are in every name; energy is always kWh and prices USD/kWh.
"""

from kilowatt.economics.carbon import CarbonSeries, CarbonSource, FlatCarbon, HourlyCarbonProfile, carbon_source_from_spec
from kilowatt.economics.cost import CostBreakdown, PoolEconomics
from kilowatt.economics.power import PowerCurve
from kilowatt.economics.prices import FlatPrice, PriceSeries, PriceSource, TimeOfUsePrice, price_source_from_spec

__all__ = [
    "CarbonSeries",
    "CarbonSource",
    "FlatCarbon",
    "HourlyCarbonProfile",
    "carbon_source_from_spec",
    "CostBreakdown",
    "FlatPrice",
    "PoolEconomics",
    "PowerCurve",
    "PriceSeries",
    "PriceSource",
    "TimeOfUsePrice",
    "price_source_from_spec",
]
