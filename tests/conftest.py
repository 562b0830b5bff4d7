"""Project-wide test settings."""

from hypothesis import settings

# A shared 2-core CI machine runs real Envoys beside these: time per example varies,
# and a slow example is not a failure.
settings.register_profile("pocketmesh", deadline=None)
settings.load_profile("pocketmesh")
