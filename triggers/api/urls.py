from django.urls import path

from triggers.api import views

urlpatterns = [
    path("items", views.ItemsView.as_view(), name="items"),
    path("reminders/<str:key>", views.ReminderView.as_view(), name="reminder"),
    path("broadcasts/<str:key>", views.BroadcastView.as_view(), name="broadcast"),
    path(
        "recipients/<str:external_id>/triggers",
        views.RecipientTriggersView.as_view(),
        name="recipient-triggers",
    ),
    path(
        "recipients/<str:external_id>/triggers/<str:key>",
        views.RecipientTriggerView.as_view(),
        name="recipient-trigger",
    ),
]
