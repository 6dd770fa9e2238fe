"""Feature selection: per-latent output scores (Arad et al. 2025) and Delta Token Confidence
(Wang et al. 2025) of each SAE (``latent_scores``, ``job.run_select_features``)."""

from saesteer.selection.config import (
    AMPLIFY_MODES,
    ARAD_PROMPT,
    DeltaConfConfig,
    OutputScoreConfig,
    SelectionConfig,
    SelectionConfigError,
)

__all__ = ["AMPLIFY_MODES", "ARAD_PROMPT", "DeltaConfConfig", "OutputScoreConfig", "SelectionConfig", "SelectionConfigError"]
