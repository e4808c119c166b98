"""An OpenAI-compatible server over a pool of Decoders (needs the ``[serve]`` extra).

``python -m sprinter_ext serve`` runs it (:func:`sprinter_ext.serve.cli.main`);
:func:`create_app` builds the FastAPI app for your own uvicorn or ASGI host.
"""

from __future__ import annotations

__all__ = ["create_app", "DecoderPool", "Metrics"]


def __getattr__(name):
    # NOTE: lazy, so `import sprinter_ext.serve.cli` can explain a missing extra before
    # fastapi or prometheus_client is imported.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "DecoderPool":
        from .pool import DecoderPool

        return DecoderPool
    if name == "Metrics":
        from .metrics import Metrics

        return Metrics
    raise AttributeError(name)
