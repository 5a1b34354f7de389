"""The vitscope Dash UI: a client of the REST API (``/api/v1``), never of backend internals.

``app.main.create_dash_app(api_url)`` builds it; ``python -m app.main --api-url URL`` runs it on its own.
"""
