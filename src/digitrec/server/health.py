"""`GET /healthz`: for load balancers and orchestrators.

`middleware.HealthFirstMiddleware` answers it first, in one step, with the same body; this route documents
it in the OpenAPI schema (and answers if the middleware is ever left out).
"""

from __future__ import annotations

from fastapi import APIRouter

from digitrec.server.deps import ClassifierDep
from digitrec.server.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(classifier: ClassifierDep) -> Health:
    """Answer `ok` when the server is up and its model is loaded."""
    return Health(status="ok")
