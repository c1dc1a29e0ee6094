"""The machines part of the HTTP API (docs/api.md): list, save, validate, versions, diagrams.

serializers.py (bodies and answers), views.py (HTTP to machines.services and
machines.selectors), examples.py (OpenAPI examples), errors.py (this app's exceptions in the
one error shape, registered from MachinesConfig.ready).
"""
