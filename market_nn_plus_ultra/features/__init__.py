"""Feature layer: declarative feature registry, per-symbol pipeline, built-in features, docs.

    from market_nn_plus_ultra.features import FeaturePipeline
    panel = FeaturePipeline(names=["rsi_14", "macd"]).transform_panel(panel)

Built-in features (technical, statistical, spectral, calendar) register into
:data:`REGISTRY` when this package is imported; alternative-data signals do the same
from ``features/alternative.py``. Add your own with the :func:`register` decorator.
"""

from importlib.util import find_spec

# Registration order is the order of `features list`, the docs and the output columns.
from . import technical  # isort: skip
from . import statistical  # isort: skip
from . import spectral  # isort: skip
from . import calendar  # isort: skip
from .compute import compute_features, write_features
from .docs import features_markdown, write_feature_docs
from .frequency import is_intraday, periods_per_year
from .pipeline import FeaturePipeline, FeatureReport
from .registry import REGISTRY, TIMESTAMP, FeatureError, FeatureRegistry, FeatureSpec, register

# Alternative-data signals live in their own module and register on import, like the
# built-ins; the package works without it.
if find_spec(f"{__name__}.alternative") is not None:
    from . import alternative  # noqa: F401

__all__ = [
    "REGISTRY",
    "TIMESTAMP",
    "FeatureError",
    "FeaturePipeline",
    "FeatureRegistry",
    "FeatureReport",
    "FeatureSpec",
    "calendar",
    "compute_features",
    "features_markdown",
    "is_intraday",
    "periods_per_year",
    "register",
    "spectral",
    "statistical",
    "technical",
    "write_feature_docs",
    "write_features",
]
