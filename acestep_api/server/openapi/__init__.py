"""The OpenAPI document: request bodies and answers as pydantic models (request_bodies.py,
answers.py), the decorator arguments the routes use (route_docs.py), and the document with its
security schemes and its guarded /openapi.json, /docs and /redoc (document.py)."""
