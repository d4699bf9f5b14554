"""The dashboard's pool screens."""

from django.urls import path

from pools_app import views

urlpatterns = [
    path("ui/workers", views.workers_view, name="workers"),
    path("ui/pools", views.pools_view, name="pools"),
]
