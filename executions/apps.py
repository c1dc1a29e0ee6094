from django.apps import AppConfig


def _perform_here(*args, **kwargs):
    """performers.PERFORM, imported on first use: only sync-mode work needs it (and its HTTP
    client), so a management command or a read does not pay for importing it."""
    from executions.runtime import performers

    return performers.PERFORM(*args, **kwargs)


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self):
        from executions.api import errors
        from executions.runtime import advancing, sqlstore, store

        store.active = sqlstore.SqlStore()  # the runtime's store: the database
        advancing.perform_here = _perform_here  # sync mode performs work in-process

        errors.register()  # the service refusals in the API's error shape (no DRF imported)
