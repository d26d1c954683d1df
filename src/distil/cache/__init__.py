"""Teacher-output caches for vision: run the teacher once over stored augmented views, train many times."""

from distil.cache.views import ViewAugment, crop_flip, view_params, view_table
from distil.cache.vision import (
    StaleCacheError, VisionTeacherCache, build_vision_cache, dataset_fingerprint, teacher_fingerprint,
)

__all__ = [
    "StaleCacheError", "ViewAugment", "VisionTeacherCache", "build_vision_cache", "crop_flip", "dataset_fingerprint",
    "teacher_fingerprint", "view_params", "view_table",
]
