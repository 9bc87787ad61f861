"""The kilowatt.dev/v1alpha1 API as pydantic v2 models: the single source of truth for the CRDs."""

from kilowatt.api.v1alpha1 import (
    GROUP,
    VERSION,
    AcceleratorPool,
    AcceleratorPoolSpec,
    InferenceService,
    InferenceServiceSpec,
    ScalingMode,
)

__all__ = [
    "GROUP",
    "VERSION",
    "AcceleratorPool",
    "AcceleratorPoolSpec",
    "InferenceService",
    "InferenceServiceSpec",
    "ScalingMode",
]
