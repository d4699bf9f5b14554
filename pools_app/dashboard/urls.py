"""The dashboard's pool screens."""

from django.urls import path

from pools_app.dashboard import manage as manage_views
from pools_app.dashboard import views

urlpatterns = [
    path("ui/workers", views.workers_view, name="workers"),
    path("ui/pools", views.pools_view, name="pools"),
    # Pool management (staff) and each pool's live view: pools_app.dashboard.manage.
    path("ui/pools/new", manage_views.pool_new_view, name="pool_new"),
    path("ui/pools/<str:name>", manage_views.pool_detail_view, name="pool_detail"),
    path("ui/pools/<str:name>/edit", manage_views.pool_edit_view, name="pool_edit"),
    path("ui/pools/<str:name>/<str:action>", manage_views.pool_action_view, name="pool_action"),
]
