"""The shared plumbing of the HTTP API (docs/api.md): the one error shape and the registry
of domain exceptions (errors.py), bounded body parsers (parsers.py), OpenAPI helpers
(schema.py), shared views (views.py), links (links.py) and every /api/ route (urls.py).

Only urls.py names the apps' API views; the rest imports neither machines nor executions
(only accounts' role checks): the apps register their exceptions with errors.register from
their AppConfig.ready, so no package cycle runs through here.
"""
