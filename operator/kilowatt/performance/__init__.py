"""How fast a model serves on a GPU: memory fit, latency at a load, and the most load within an SLO.

Pure code: no Kubernetes, no Prometheus. The operator, the twin and the CLI all call it.
"""

from kilowatt.performance.capacity import CapacityModel, LoadPoint, TokenMix
from kilowatt.performance.hardware import GPU, GPU_CATALOGUE, gpu_by_name
from kilowatt.performance.shapes import ModelShape

__all__ = ["GPU", "GPU_CATALOGUE", "CapacityModel", "LoadPoint", "ModelShape", "TokenMix", "gpu_by_name"]
