from django.apps import AppConfig


class MachinesConfig(AppConfig):
    name = "machines"
    verbose_name = "Machines"

    def ready(self):
        from machines.api import errors

        errors.register()  # this app's exceptions in the API's error shape
