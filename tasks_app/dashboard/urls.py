"""The dashboard's task screens. The JSON API lives under /api and /tasks (neutrino_site.api)."""

from django.urls import include, path

from tasks_app.dashboard import alerts, audit, bulk, dead_letters, replay, schedules, views

pages = [
    path("tasks/<uuid:task_id>", views.task_detail_view, name="task_detail"),
    path("tasks/<uuid:task_id>/result", views.task_result_download_view, name="task_result_download"),
    path("tasks/<uuid:task_id>/log.txt", views.task_log_download_view, name="task_log_download"),
    path("tasks/<uuid:task_id>/cancel", views.task_cancel_view, name="task_cancel"),
    path("tasks/<uuid:task_id>/retry", views.task_retry_view, name="task_retry"),
    path("tasks/<uuid:task_id>/retry/edit", replay.retry_edit_view, name="task_retry_edit"),
    path("tasks/<uuid:task_id>/retry/check", replay.retry_check_view, name="task_retry_check"),
    path("tasks/<uuid:task_id>/run-now", views.task_run_now_view, name="task_run_now"),
    path("groups/<uuid:group_id>/cancel", views.group_cancel_view, name="group_cancel"),
    path("overview", views.overview_view, name="overview"),
    path("dead-letters", dead_letters.dead_letters_view, name="dead_letters"),
    # Schedules: tasks_app.dashboard.schedules ("new" and "preview" are not schedule names).
    path("schedules", schedules.schedule_list_view, name="schedules"),
    path("schedules/new", schedules.schedule_new_view, name="schedule_new"),
    path("schedules/preview", schedules.schedule_preview_view, name="schedule_preview"),
    path("schedules/<str:name>", schedules.schedule_detail_view, name="schedule_detail"),
    path("schedules/<str:name>/edit", schedules.schedule_edit_view, name="schedule_edit"),
    path("schedules/<str:name>/<str:action>", schedules.schedule_action_view, name="schedule_action"),
    path("bulk/new", bulk.bulk_new_view, name="bulk_new"),
    path("bulk", bulk.bulk_create_view, name="bulk_create"),
    path("bulk/<uuid:bulk_id>", bulk.bulk_detail_view, name="bulk_detail"),
    path("bulk/<uuid:bulk_id>/stop", bulk.bulk_stop_view, name="bulk_stop"),
    path("audit", audit.audit_view, name="audit"),
    # Alert rules, webhook targets and deliveries: tasks_app.dashboard.alerts.
    path("alerts", alerts.alerts_view, name="alerts"),
    path("alerts/banner", alerts.alert_banner_view, name="alert_banner"),
    path("alerts/rules/new", alerts.alert_rule_new_view, name="alert_rule_new"),
    path("alerts/rules/<int:rule_id>/edit", alerts.alert_rule_edit_view, name="alert_rule_edit"),
    path("alerts/rules/<int:rule_id>/delete", alerts.alert_rule_delete_view, name="alert_rule_delete"),
    path("alerts/targets/new", alerts.webhook_target_new_view, name="webhook_target_new"),
    path("alerts/targets/<int:target_id>/delete", alerts.webhook_target_delete_view, name="webhook_target_delete"),
    path("alerts/deliveries/<int:delivery_id>/retry", alerts.webhook_delivery_retry_view,
         name="webhook_delivery_retry"),
]

# Under one ui/ prefix: an API request (the most frequent) then skips these pages with one check
# instead of trying each pattern (that was 9% of a submit's time).
urlpatterns = [
    path("", views.task_list_view, name="task_list"),
    path("ui/", include(pages)),
]
