"""What the machines API answers (and the shape of a validation result)."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.links import page_url
from api.schema import ProblemSerializer
from machines.models import MachineVersion


class MachineVersionSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="machine_id", help_text="The machine id.")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True,
                                              allow_null=True)
    definition = serializers.JSONField(help_text="The parsed definition, version filled in.")
    api_url = serializers.SerializerMethodField()
    diagram_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Its page in the explorer.")

    class Meta:
        model = MachineVersion
        fields = ["id", "version", "title", "description", "definition", "source",
                  "source_format", "content_hash", "created_at", "created_by", "api_url",
                  "diagram_url", "url"]

    def get_api_url(self, version) -> str:
        return reverse("api:machine-version", args=[version.machine_id, version.version])

    def get_diagram_url(self, version) -> str:
        return reverse("api:machine-version-svg", args=[version.machine_id, version.version])

    def get_url(self, version) -> str | None:
        return page_url(version)


class ScheduleSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The schedule's name in `schedules:`.")
    cron = serializers.CharField(allow_null=True, help_text="The cron expression, or null.")
    in_words = serializers.CharField(allow_null=True,
                                     help_text="The cron expression in words, or null.")
    every = serializers.FloatField(allow_null=True, help_text="Seconds between starts, or null.")
    time_zone = serializers.CharField(help_text="The IANA zone `cron` is read in.")
    input = serializers.JSONField(help_text="The start input of each execution.")
    version = serializers.IntegerField(help_text="The version that declares it.")
    last_fired_at = serializers.DateTimeField(allow_null=True)
    next_runs = serializers.ListField(child=serializers.DateTimeField(),
                                      help_text="The next fire times, soonest first.")


class MachineDetailSerializer(MachineVersionSerializer):
    """The latest version, with the schedules it runs on (given in the context)."""

    schedules = serializers.SerializerMethodField()

    class Meta(MachineVersionSerializer.Meta):
        fields = MachineVersionSerializer.Meta.fields + ["schedules"]

    @extend_schema_field(ScheduleSerializer(many=True))
    def get_schedules(self, version) -> list[dict]:
        return ScheduleSerializer(self.context.get("schedules", []), many=True).data


class SavedVersionSerializer(MachineVersionSerializer):
    warnings = serializers.SerializerMethodField()

    class Meta(MachineVersionSerializer.Meta):
        fields = MachineVersionSerializer.Meta.fields + ["warnings"]

    def get_warnings(self, version) -> list[dict]:
        return self.context.get("warnings", [])


class MachineSummarySerializer(serializers.Serializer):
    id = serializers.CharField(source="machine_id")
    version = serializers.IntegerField(help_text="The latest version.")
    title = serializers.CharField()
    description = serializers.CharField()
    versions = serializers.IntegerField(source="versions_count",
                                        help_text="How many versions are stored.")
    executions = serializers.DictField(
        child=serializers.IntegerField(), source="execution_counts",
        help_text="Executions of every version by status, e.g. {\"waiting\": 3}.")
    api_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(help_text="Its page in the explorer.")

    def get_api_url(self, version) -> str:
        return reverse("api:machine", args=[version.machine_id])

    def get_url(self, version) -> str | None:
        return page_url(version.machine)


class ValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = ProblemSerializer(many=True)
    warnings = ProblemSerializer(many=True)
