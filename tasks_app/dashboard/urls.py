"""The dashboard's task screens. The JSON API lives under /api and /tasks (neutrino_site.api)."""

from django.urls import path

from tasks_app.dashboard import dead_letters, replay, views

urlpatterns = [
    path("", views.task_list_view, name="task_list"),
    path("ui/tasks/<uuid:task_id>", views.task_detail_view, name="task_detail"),
    path("ui/tasks/<uuid:task_id>/cancel", views.task_cancel_view, name="task_cancel"),
    path("ui/tasks/<uuid:task_id>/retry", views.task_retry_view, name="task_retry"),
    path("ui/tasks/<uuid:task_id>/retry/edit", replay.retry_edit_view, name="task_retry_edit"),
    path("ui/tasks/<uuid:task_id>/retry/check", replay.retry_check_view, name="task_retry_check"),
    path("ui/overview", views.overview_view, name="overview"),
    path("ui/dead-letters", dead_letters.dead_letters_view, name="dead_letters"),
]
