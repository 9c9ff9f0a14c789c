"""How good a fit is: the LDS (:mod:`.lds`), training fresh models with a shared cache
(:mod:`.retrain`, used by selection too) and retrain-to-verify (:mod:`.verify`)."""

from .lds import (GroundTruth, LDSResult, ground_truth_design, heldout_lds, heldout_predictions, lds,
                  lds_ground_truth, noise_ceiling, spearman_per_column, train_ground_truth)
from .retrain import results_key, train_models
from .verify import actual_removal_effects, removal_design, verify_removals

__all__ = ["GroundTruth", "LDSResult", "actual_removal_effects", "ground_truth_design", "heldout_lds",
           "heldout_predictions", "lds", "lds_ground_truth", "noise_ceiling", "removal_design", "results_key",
           "spearman_per_column", "train_ground_truth", "train_models", "verify_removals"]
