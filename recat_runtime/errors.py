"""Runtime errors; all derive from ``acqe_format.errors.AcqeError`` so the CLI prints them as one line."""
from acqe_format.errors import AcqeError, RuntimeLoadError

__all__ = ["RuntimeLoadError", "NoScheduleError", "CacheSettingsError", "ForecastConflictError", "CompactWeightError",
           "UnsupportedDiffusersError", "DeviceError", "ImageInputError", "SamplingSettingsError", "ControlNetError"]


class NoScheduleError(AcqeError, LookupError):
    """The `.acqe` file holds no ReCaT schedule for the requested sampler / steps / guidance / budget.
    The request travels with the error (``sampler``, ``steps``, ``budget``, ``guidance``), so a front end
    can say how to profile for it."""

    cli_prefix = "no ReCaT schedule"

    def __init__(self, message: str, *, sampler: str | None = None, steps: int | None = None,
                 budget: int | None = None, guidance: float | None = None):
        super().__init__(message)
        self.sampler, self.steps, self.budget, self.guidance = sampler, steps, budget, guidance


class CacheSettingsError(AcqeError, ValueError):
    """Cache options that contradict each other or what the file stores (e.g. ``--forecast`` with a stored
    schedule whose correction already forecasts the feature)."""

    cli_prefix = "cache settings"


class ForecastConflictError(CacheSettingsError):
    """A plain forecast asked for on top of a stored correction that already forecasts the feature."""


class CompactWeightError(AcqeError, TypeError):
    """An operation a compact weight cannot do without silently losing it (writing arbitrary values into its
    codes), or a request compact weights do not support."""

    cli_prefix = "compact weights"


class UnsupportedDiffusersError(AcqeError, ImportError):
    """The installed diffusers is outside the range the `.acqe` integration was built and tested against."""

    cli_prefix = "unsupported diffusers"


class DeviceError(AcqeError, ValueError):
    """A device that torch does not know, or that this machine does not have (``cuda`` without CUDA,
    ``cuda:3`` on a machine with two GPUs)."""

    cli_prefix = "unusable device"


class ImageInputError(AcqeError, ValueError):
    """An image-to-image request that cannot run: no initial image for a model that only refines images
    (``needs_image``), an unreadable image, or a strength outside (0, 1]."""

    cli_prefix = "image input"

    def __init__(self, message: str, *, needs_image: bool = False):
        super().__init__(message)
        self.needs_image = needs_image


class SamplingSettingsError(AcqeError, ValueError):
    """A run this model cannot make: more denoising steps than its scheduler has training timesteps, or a
    default image size (``unet.sample_size`` x the VAE's scale) that the pipeline refuses. The file may be
    intact and its metadata valid: the request and the model do not fit together."""

    cli_prefix = "sampling settings"


class ControlNetError(AcqeError, ValueError):
    """A ControlNet that cannot steer this model: not a readable diffusers ControlNet folder (safetensors
    weights), made for another UNet (its cross-attention width, blocks or conditioning differ), non-finite
    weights, or an architecture without a ControlNet pipeline."""

    cli_prefix = "controlnet"
