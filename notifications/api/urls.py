from django.urls import path

from notifications.api import inbox, producer

urlpatterns = [
    path("events", producer.EventsView.as_view(), name="events"),
    path("events/batch", producer.EventsBatchView.as_view(), name="events-batch"),
    path("events/<str:event_id>", producer.EventDetailView.as_view(), name="event-detail"),
    path("recipients/<str:external_id>", producer.RecipientView.as_view(), name="recipient"),
    path(
        "recipients/<str:external_id>/export",
        producer.RecipientExportView.as_view(),
        name="recipient-export",
    ),
    path(
        "recipients/<str:external_id>/preferences",
        producer.RecipientPreferencesView.as_view(),
        name="recipient-preferences",
    ),
    path(
        "recipients/<str:external_id>/token",
        producer.RecipientTokenView.as_view(),
        name="recipient-token",
    ),
    path(
        "recipients/<str:external_id>/tokens",
        producer.RecipientTokensView.as_view(),
        name="recipient-tokens",
    ),
    path(
        "topics/<str:key>/subscribers",
        producer.TopicSubscribersView.as_view(),
        name="topic-subscribers",
    ),
    path("notification-types", producer.NotificationTypesView.as_view(), name="notification-types"),
    path(
        "notification-types/<str:key>",
        producer.NotificationTypeView.as_view(),
        name="notification-type",
    ),
    path("inbox", inbox.InboxListView.as_view(), name="inbox"),
    path("inbox/unread-count", inbox.UnreadCountView.as_view(), name="inbox-unread-count"),
    path("inbox/read-all", inbox.ReadAllView.as_view(), name="inbox-read-all"),
    path("inbox/preferences", inbox.InboxPreferencesView.as_view(), name="inbox-preferences"),
    path(
        "inbox/<str:notification_id>/read",
        inbox.MarkView.as_view(action_name="read"),
        name="inbox-read",
    ),
    path(
        "inbox/<str:notification_id>/unread",
        inbox.MarkView.as_view(action_name="unread"),
        name="inbox-unread",
    ),
    path(
        "inbox/<str:notification_id>/archive",
        inbox.MarkView.as_view(action_name="archive"),
        name="inbox-archive",
    ),
]
