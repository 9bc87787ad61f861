"""kilowatt: serve LLM inference at the lowest electricity + hardware cost that meets each service's SLO."""

__version__ = "0.1.0"
