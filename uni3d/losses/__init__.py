"""The shared score-distillation loss module (METHOD.md). It knows tensors, not models."""

from uni3d.losses.divergences import NAMED as NAMED_DIVERGENCES
from uni3d.losses.divergences import Divergence, get_divergence
from uni3d.losses.fake_score import fake_score_loss
from uni3d.losses.forms import EXPANDED_TERMS, expanded_loss, expanded_terms, integral_loss, sid_loss
from uni3d.losses.generator import generator_loss, regression_loss
from uni3d.losses.inputs import DenoiserOutputs
from uni3d.losses.presets import PRESET_NAMES, Preset, get_preset
from uni3d.losses.ratio import RatioEstimate, discriminator_loss, ratio_from_logits
from uni3d.losses.weighting import WEIGHTINGS, data_weight, score_weight

__all__ = [
    "NAMED_DIVERGENCES",
    "PRESET_NAMES",
    "WEIGHTINGS",
    "DenoiserOutputs",
    "Divergence",
    "Preset",
    "RatioEstimate",
    "data_weight",
    "discriminator_loss",
    "EXPANDED_TERMS",
    "expanded_loss",
    "expanded_terms",
    "fake_score_loss",
    "generator_loss",
    "get_divergence",
    "get_preset",
    "integral_loss",
    "ratio_from_logits",
    "regression_loss",
    "score_weight",
    "sid_loss",
]
