"""Test-wide settings: hypothesis runs derandomized so CI sees the same examples every time
(run with HYPOTHESIS_PROFILE=explore for fresh random examples); memfit's on-disk cache
(`planner.cache`) lives in a temporary folder for the session, never the user's."""
import os
import tempfile

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

os.environ["MEMFIT_CACHE"] = tempfile.mkdtemp(prefix="memfit-cache-")
