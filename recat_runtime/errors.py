"""Runtime errors; all derive from ``acqe_format.errors.AcqeError`` so the CLI prints them as one line."""
from acqe_format.errors import AcqeError, RuntimeLoadError

__all__ = ["RuntimeLoadError", "NoScheduleError", "CacheSettingsError"]


class NoScheduleError(AcqeError, LookupError):
    """The `.acqe` file holds no ReCaT schedule for the requested sampler / steps / guidance / budget."""

    cli_prefix = "no ReCaT schedule"


class CacheSettingsError(AcqeError, ValueError):
    """Cache options that contradict each other or what the file stores (e.g. ``--forecast`` with a stored
    schedule whose correction already forecasts the feature)."""

    cli_prefix = "cache settings"
