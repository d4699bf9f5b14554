"""The dashboard's schedule screens: the list, a page per schedule with its fires, the create and edit
forms with a live "next 5 runs" preview, and the actions (pause, resume, run now, delete).

Every signed-in user sees them; each change needs its Django model permission, not just staff status:
`tasks_app.add_schedule` to create, `change_schedule` to edit, pause and resume, `delete_schedule` to
delete, `run_schedule` to run one now (granted in the Django admin; a superuser has them all). The
buttons show only to those who have them. Thin: the form (`tasks_app.dashboard.schedule_form`), the services
and the selectors do the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from neutrino.schedules import ScheduleError, next_runs
from tasks_app.core.errors import NeutrinoError
from tasks_app.core.ports import ports_of
from tasks_app.dashboard.schedule_form import ScheduleForm, timezone_names
from tasks_app.dashboard.views import require_permission, wants_partial
from tasks_app.models import Schedule
from tasks_app.selectors import schedules as selectors
from tasks_app.services import schedules as services
from tasks_app.services.audit import actor_of_request

FIRES_PAGE = 50
PREVIEW_RUNS = 5


def _by(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"


def _detail(name: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("schedule_detail", args=[name]))


def _permissions(request: HttpRequest) -> dict[str, bool]:
    """The buttons a user sees follow the permissions the views check."""
    return {f"can_{what}": request.user.has_perm(f"tasks_app.{what}_schedule")
            for what in ("add", "change", "delete", "run")}


@require_GET
def schedule_list_view(request: HttpRequest) -> HttpResponse:
    rows = [{"schedule": s, "last": selectors.last_fire(s)} for s in selectors.schedule_list()]
    return render(request, "tasks_app/schedules.html", {"rows": rows, "now": timezone.now(),
                                                        **_permissions(request)})


@require_GET
def schedule_detail_view(request: HttpRequest, name: str) -> HttpResponse:
    schedule = selectors.schedule_detail(name=name)
    if schedule is None:
        raise Http404(f"no schedule named {name}")
    before = parse_datetime(request.GET.get("before", "")) if request.GET.get("before") else None
    fires = selectors.schedule_fires(schedule=schedule, limit=FIRES_PAGE, before=before)
    context = {
        "schedule": schedule,
        "last": selectors.last_fire(schedule),
        "runs": selectors.schedule_next_runs(schedule, n=PREVIEW_RUNS),
        "fires": fires,
        "older": fires[-1].slot_at.isoformat() if len(fires) == FIRES_PAGE else None,
        "now": timezone.now(),
        **_permissions(request),
    }
    return render(request, "tasks_app/schedule_detail.html", context)


def _form_page(request: HttpRequest, form: ScheduleForm, schedule: Schedule | None) -> HttpResponse:
    return render(request, "tasks_app/schedule_form.html", {
        "form": form, "schedule": schedule, "timezones": timezone_names(),
        "preview": _preview_context(cron=form["cron"].value(), interval=form["interval_s"].value(),
                                    tz=form["timezone"].value(), anchor=schedule.created_at if schedule else None),
    })


@require_http_methods(["GET", "POST"])
def schedule_new_view(request: HttpRequest) -> HttpResponse:
    require_permission(request, "tasks_app.add_schedule", to="create schedules")
    form = ScheduleForm(request.POST or None, initial={"timezone": "UTC", "args": {}})
    if request.method == "POST" and form.is_valid():
        try:
            schedule = services.schedule_create(name=form.cleaned_data["name"], fields=form.checked,
                                                created_by=_by(request), actor=actor_of_request(request))
        except NeutrinoError as exc:
            form.add_error("name" if exc.status == 409 else None, exc.message)
        else:
            messages.success(request, f"Schedule {schedule.name} created; it fires next at "
                                      f"{_local(schedule.next_run_at, schedule.timezone)}.")
            return _detail(schedule.name)
    return _form_page(request, form, None)


@require_http_methods(["GET", "POST"])
def schedule_edit_view(request: HttpRequest, name: str) -> HttpResponse:
    require_permission(request, "tasks_app.change_schedule", to="change schedules")
    schedule = Schedule.objects.filter(name=name).first()
    if schedule is None:
        raise Http404(f"no schedule named {name}")
    form = ScheduleForm(request.POST or None, instance=schedule)
    if request.method == "POST" and form.is_valid():
        try:
            services.schedule_update(name=name, changes=form.checked, by=_by(request),
                                     actor=actor_of_request(request))
        except NeutrinoError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Schedule {name} saved.")
            return _detail(name)
    return _form_page(request, form, schedule)


ACTIONS = {"pause": ("tasks_app.change_schedule", "pause schedules"),
           "resume": ("tasks_app.change_schedule", "resume schedules"),
           "run": ("tasks_app.run_schedule", "run schedules now"),
           "delete": ("tasks_app.delete_schedule", "delete schedules")}


@require_POST
def schedule_action_view(request: HttpRequest, name: str, action: str) -> HttpResponse:
    if action not in ACTIONS:
        raise Http404(f"no schedule action {action!r}")
    permission, to = ACTIONS[action]
    require_permission(request, permission, to=to)
    if not Schedule.objects.filter(name=name).exists():
        raise Http404(f"no schedule named {name}")
    try:
        if action == "pause":
            services.schedule_pause(name=name, by=_by(request), actor=actor_of_request(request))
            messages.success(request, f"Schedule {name} is paused: it fires nothing until resumed.")
        elif action == "resume":
            schedule = services.schedule_resume(name=name, actor=actor_of_request(request))
            messages.success(request, f"Schedule {name} resumed; next run "
                                      f"{_local(schedule.next_run_at, schedule.timezone)}.")
        elif action == "run":
            fire = services.schedule_run_now(ports=ports_of(request), name=name, by=_by(request),
                                             actor=actor_of_request(request))
            messages.success(request, f"Schedule {name} ran now as task {fire.task_id}.")
        else:
            services.schedule_delete(name=name, actor=actor_of_request(request))
            messages.success(request, f"Schedule {name} deleted (the tasks it fired stay).")
            return HttpResponseRedirect(reverse("schedules"))
    except NeutrinoError as exc:
        messages.error(request, exc.message)
    return _detail(name)


@require_GET
def schedule_preview_view(request: HttpRequest) -> HttpResponse:
    """The next runs of the expression being typed (htmx, a short delay after each keystroke)."""
    anchor = None
    if name := request.GET.get("schedule"):  # an edit: an interval keeps its schedule's anchor
        anchor = Schedule.objects.filter(name=name).values_list("created_at", flat=True).first()
    context = _preview_context(cron=request.GET.get("cron"), interval=request.GET.get("interval_s"),
                               tz=request.GET.get("timezone"), anchor=anchor)
    if not wants_partial(request, "schedule-preview"):
        context["standalone"] = True
    return render(request, "tasks_app/_schedule_preview.html", context)


def _preview_context(*, cron: Any, interval: Any, tz: Any, anchor: datetime | None) -> dict[str, Any]:
    cron, interval, tz = str(cron or "").strip(), str(interval or "").strip(), str(tz or "").strip() or "UTC"
    if not cron and not interval:
        return {"preview_hint": "Type a cron expression or an interval to see the next runs.", "preview_runs": []}
    try:
        if cron and interval:
            raise ScheduleError("give a cron expression or an interval, not both", field="cron")
        if interval and not interval.isdigit():
            raise ScheduleError("the interval is a whole number of seconds", field="interval_s")
        timing: str | int = int(interval) if interval else cron
        runs = next_runs(timing, tz, n=PREVIEW_RUNS, anchor=anchor.replace(microsecond=0) if anchor else None)
    except ScheduleError as exc:
        return {"preview_error": exc.message, "preview_runs": []}
    return {"preview_error": None, "preview_runs": runs, "preview_tz": tz, "now": timezone.now()}


def _local(moment: datetime | None, tz: str) -> str:
    if moment is None:
        return "never (paused)"
    return moment.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
