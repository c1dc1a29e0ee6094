from django.apps import AppConfig


class MachinesConfig(AppConfig):
    name = "machines"
    verbose_name = "Machines"

    def ready(self):
        from django.conf import settings

        from machines import diagrams
        from machines.api import errors

        errors.register()  # this app's exceptions in the API's error shape
        # The pure core reads no settings: the diagram bounds are handed to it here.
        given = getattr(settings, "DATA_MACHINES", {}).get("DIAGRAMS", {})
        diagrams.configure(**{name.lower(): value for name, value in given.items()})
