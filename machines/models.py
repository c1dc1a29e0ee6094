"""Stored machines: one row per machine id, one immutable row per version."""
from django.conf import settings
from django.db import models
from django.urls import reverse

from machines.definition import Schedule as Declared


class Machine(models.Model):
    """A machine id. Its versions hold everything else; this row anchors listings."""

    id = models.CharField(primary_key=True, max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.id

    @property
    def latest(self):
        return self.versions.order_by("-version").first()

    def get_absolute_url(self):
        return reverse("explorer:machine", args=[self.id])


class MachineVersion(models.Model):
    """One immutable version of a machine: the source as written and its parsed form."""

    FORMAT_CHOICES = [("yaml", "YAML"), ("json", "JSON")]

    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    source = models.TextField(help_text="The definition exactly as its author wrote it.")
    source_format = models.CharField(max_length=4, choices=FORMAT_CHOICES)
    definition = models.JSONField(help_text="The parsed definition, with its version filled in.")
    content_hash = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["machine_id", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["machine", "version"], name="unique_machine_version"),
        ]

    def __str__(self):
        return f"{self.machine_id} v{self.version}"

    def get_absolute_url(self):
        return reverse("explorer:machine-version", args=[self.machine_id, self.version])

    @property
    def display(self):
        return self.title or self.machine_id

    def parsed(self):
        """The typed definition the engine runs (cached per version in this process)."""
        from machines.language import load_cached

        return load_cached(self.machine_id, self.version, self.content_hash,
                           lambda: self.definition)


class Schedule(models.Model):
    """An entry of the `schedules:` section of a machine's latest version, and when it
    fires next. Saving a version reconciles these rows (machines.services); the timer loop
    claims a fire by moving `next_fire_at` on with compare-and-swap
    (executions.runtime.schedules)."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField(help_text="The version that declares it.")
    timing = models.JSONField(help_text="cron, every and time_zone as declared.")
    input = models.JSONField(default=dict, help_text="The start input of each execution.")
    next_fire_at = models.FloatField(db_index=True, help_text="epoch seconds")
    last_fired_at = models.FloatField(null=True, blank=True, help_text="epoch seconds")

    class Meta:
        ordering = ["machine_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["machine", "name"], name="unique_schedule_name"),
        ]

    def __str__(self):
        return f"{self.machine_id} schedule {self.name}"

    def declared(self):
        """The schedule as its definition declares it (what machines.schedules times)."""
        return Declared(id=self.name, cron=self.timing.get("cron"),
                        every=self.timing.get("every"),
                        time_zone=self.timing.get("time_zone") or "UTC", input=self.input)
