"""Test-wide settings: hypothesis runs derandomized so CI sees the same examples every time
(run with HYPOTHESIS_PROFILE=explore for fresh random examples)."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
