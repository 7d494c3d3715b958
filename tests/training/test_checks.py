"""check_config: registry names and cross-field limits, before any data is read."""

from __future__ import annotations

import pytest

from market_nn_plus_ultra.config import ConfigError, load_config
from market_nn_plus_ultra.features.registry import FeatureError
from market_nn_plus_ultra.training.checks import check_config


def _cfg(*overrides: str):
    return load_config(overrides=list(overrides))


def test_the_defaults_pass():
    check_config(_cfg())
    check_config(_cfg(), head=False)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.architecture=hybrid_transfomer",
            r"`model.architecture`: unknown name 'hybrid_transfomer' — did you mean "
            r"`model.architecture=hybrid_transformer`\? Registered: hybrid_transformer, "
            r"moe_transformer, multi_scale, omni_mixture, state_space, temporal_fusion\.",
        ),
        ("model.architecture=lstm", r"unknown name 'lstm' Registered: hybrid_transformer"),
        ("model.head=dirichlt", r"did you mean `model.head=dirichlet`\?"),
        (
            "model.horizon=6",
            r"model.horizon=6 exceeds windows.horizon=5: .* \(e.g. --set windows.horizon=6\)",
        ),
    ],
)
def test_names_and_limits_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(_cfg(override))


def test_pretraining_has_no_head_or_horizon_to_check():
    check_config(_cfg("model.head=nonsense", "model.horizon=9"), head=False)
    with pytest.raises(ConfigError, match=r"`model\.architecture`: unknown name .nonsense."):
        check_config(_cfg("model.architecture=nonsense"), head=False)


def test_unknown_feature_names_are_refused():
    with pytest.raises(FeatureError, match="did you mean `rsi_14`"):
        check_config(_cfg("features.names=[rsi_41]"), head=False)


def test_a_curriculum_that_outgrows_the_model_is_refused():
    cfg = _cfg("curriculum.enabled=true", "curriculum.start_horizon=4", "model.horizon=2")
    with pytest.raises(ConfigError, match=r"curriculum.start.horizon=4 exceeds model.horizon=2"):
        check_config(cfg)
