"""The executions part of the HTTP API (docs/api.md): start, list, read, history, drive.

serializers.py (bodies and answers), pagination.py (cursor pages), views.py (HTTP to the
service functions and executions.selectors; filters from executions.filters), examples.py
(OpenAPI examples), errors.py (the service refusals in the one error shape, registered from
ExecutionsConfig.ready).
"""
