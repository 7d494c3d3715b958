"""Service layer: the HTTP API of a trained run (FastAPI), with guardrails and metrics.

app = create_app(cfg, "outputs/run")   # then uvicorn.run(app), or TestClient(app)
# PLUS_ULTRA_CONFIG=cfg.yaml uvicorn --factory market_nn_plus_ultra.service:create_app
"""

from .app import ServiceState, create_app
from .errors import ServiceError

__all__ = ["ServiceError", "ServiceState", "create_app"]
