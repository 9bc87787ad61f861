"""`kilowatt demo`: the whole system in a box (see kilowatt.demo.run)."""

from kilowatt.demo.run import BASELINES, DemoError, DemoOptions, DemoOutcome, run_demo

__all__ = ["BASELINES", "DemoError", "DemoOptions", "DemoOutcome", "run_demo"]
