from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from workflow_site import errors

urlpatterns = [
    path("favicon.ico", errors.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("explorer.urls")),
]

handler403 = "workflow_site.errors.permission_denied"
handler404 = "workflow_site.errors.page_not_found"
handler500 = "workflow_site.errors.server_error"
