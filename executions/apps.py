from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self):
        from executions.api import errors
        from executions.runtime import advancing, performers, sqlstore, store

        store.active = sqlstore.SqlStore()  # the runtime's store: the database
        advancing.perform_here = performers.PERFORM  # sync mode performs work in-process

        errors.register()  # the service refusals in the API's error shape
