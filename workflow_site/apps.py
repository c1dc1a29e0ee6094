"""The admin app with the site of workflow_site.admin_site (branding, editors without
staff, the queue's tables last)."""
from django.contrib.admin.apps import AdminConfig


class DataMachinesAdminConfig(AdminConfig):
    default_site = "workflow_site.admin_site.DataMachinesAdminSite"
