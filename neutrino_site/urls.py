from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from neutrino_site.api import api
from neutrino_site.auth import ThrottledLoginView
from neutrino_site.health import healthz, readyz
from neutrino_site.metrics import metrics_view

# The admin's modules load here, where the admin is served, not in every process (settings.INSTALLED_APPS).
admin.autodiscover()

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("tasks_app.dashboard.urls")),
    path("", include("pools_app.dashboard.urls")),
    path("", api.urls),
]
