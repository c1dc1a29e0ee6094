"""The explorer's pages (included at the site root)."""
from django.urls import path

from explorer.views import executions, machines, operations, preferences, search

app_name = "explorer"

urlpatterns = [
    path("", machines.machine_list, name="home"),
    path("machines/", machines.machine_list, name="machines"),
    path("machines/<str:machine_id>/", machines.machine_detail, name="machine"),
    path("machines/<str:machine_id>/v/<int:version>/", machines.machine_detail,
         name="machine-version"),
    path("machines/<str:machine_id>/v/<int:version>/thumbnail.svg", machines.machine_thumbnail,
         name="machine-thumbnail"),
    path("time-zone/", preferences.time_zone, name="time-zone"),
    path("search/", search.search, name="search"),
    path("executions/", executions.execution_list, name="executions"),
    path("executions/<str:execution_id>/", executions.execution_detail, name="execution"),
    path("executions/<str:execution_id>/status.json", executions.execution_status,
         name="execution-status"),
    path("executions/<str:execution_id>/trigger/", executions.execution_trigger,
         name="trigger"),
    path("executions/<str:execution_id>/cancel/", executions.execution_cancel, name="cancel"),
    path("executions/<str:execution_id>/retry/", executions.execution_retry, name="retry"),
    path("executions/<str:execution_id>/operate/", operations.operate, name="operate"),
    path("failures/", operations.failures, name="failures"),
    path("operations/new/", operations.bulk_new, name="bulk-new"),
    path("operations/<str:operation_id>/", operations.bulk_detail, name="bulk"),
    path("machines/<str:machine_id>/migration/", operations.migration, name="migration"),
]
