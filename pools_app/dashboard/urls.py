"""The dashboard's pool screens."""

from django.urls import include, path

from pools_app.dashboard import manage as manage_views
from pools_app.dashboard import views

pages = [
    path("workers", views.workers_view, name="workers"),
    path("pools", views.pools_view, name="pools"),
    # Pool management (staff) and each pool's live view: pools_app.dashboard.manage.
    path("pools/new", manage_views.pool_new_view, name="pool_new"),
    path("pools/<str:name>", manage_views.pool_detail_view, name="pool_detail"),
    path("pools/<str:name>/edit", manage_views.pool_edit_view, name="pool_edit"),
    path("pools/<str:name>/<str:action>", manage_views.pool_action_view, name="pool_action"),
]

# Under one ui/ prefix: an API request (the most frequent) then skips these pages with one check
# instead of trying each pattern (that was 9% of a submit's time).
urlpatterns = [path("ui/", include(pages))]
