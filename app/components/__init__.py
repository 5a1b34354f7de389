"""One module per part of the page: ``layout()`` and ``register(app, ctx)``; ids prefixed by the module."""
