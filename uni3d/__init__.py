"""uni3d: score distillation (Uni-Instruct) for text-to-3D and one-step image generators."""

import logging

__version__ = "0.1.0"


def _drop_torchvision_notice(record: logging.LogRecord) -> bool:
    """transformers warns, on every import of diffusers without torchvision, that its CLIP and SigLIP image
    processors fall back to PIL; uni3d uses no image processor, so the notice only alarms users."""
    return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_drop_torchvision_notice)
