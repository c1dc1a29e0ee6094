"""The explorer's pages (included at the site root)."""
from django.urls import path

from executions import views

app_name = "explorer"

urlpatterns = [
    path("", views.machine_list, name="home"),
    path("machines/", views.machine_list, name="machines"),
    path("machines/<str:machine_id>/", views.machine_detail, name="machine"),
    path("machines/<str:machine_id>/v/<int:version>/", views.machine_detail,
         name="machine-version"),
    path("executions/", views.execution_list, name="executions"),
    path("executions/<str:execution_id>/", views.execution_detail, name="execution"),
    path("executions/<str:execution_id>/status.json", views.execution_status,
         name="execution-status"),
    path("executions/<str:execution_id>/trigger/", views.execution_trigger, name="trigger"),
    path("executions/<str:execution_id>/cancel/", views.execution_cancel, name="cancel"),
    path("executions/<str:execution_id>/retry/", views.execution_retry, name="retry"),
]
