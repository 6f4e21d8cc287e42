"""Silences the one transformers warning every pipeline load printed that is not ours to act on.

Importing diffusers' pipelines touches ``CLIPImageProcessor`` and ``SiglipImageProcessor``; without
torchvision, transformers falls back to their PIL versions and says so on stderr ("requires torchvision
(not installed); falling back to ..."). The runtime builds pipelines without image processors
(``feature_extractor=None``), so the fallback changes nothing here. Only records with that message are
dropped: every other warning of transformers still reaches the user.
"""
from __future__ import annotations

import logging

# the logger transformers reports the fallback on (transformers.utils.import_utils)
_LOGGER = "transformers.utils.import_utils"
_MESSAGE = "requires torchvision (not installed); falling back to"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _MESSAGE not in record.getMessage()


_FILTER = _DropTorchvisionFallback()


def quiet_torchvision_fallback() -> None:
    """Installs the filter (idempotent; torch-free: nothing is imported)."""
    logger = logging.getLogger(_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


__all__ = ["quiet_torchvision_fallback"]
