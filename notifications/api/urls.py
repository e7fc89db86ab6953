from django.urls import path

from notifications.api import (
    deliveries,
    inbox,
    index,
    producer,
    push_tokens,
    sweeps,
    web_push,
    webhook_endpoints,
)

urlpatterns = [
    path("", index.ApiIndexView.as_view(), name="api-index"),
    path("events", producer.EventsView.as_view(), name="events"),
    path("deliveries", deliveries.DeliveriesView.as_view(), name="deliveries"),
    path("sweeps", sweeps.SweepsView.as_view(), name="sweeps"),
    path("deliveries/replay", deliveries.DeliveriesReplayView.as_view(), name="deliveries-replay"),
    path("events/batch", producer.EventsBatchView.as_view(), name="events-batch"),
    path(
        "webhook-endpoints",
        webhook_endpoints.WebhookEndpointsView.as_view(),
        name="webhook-endpoints",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>",
        webhook_endpoints.WebhookEndpointView.as_view(),
        name="webhook-endpoint",
    ),
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
        "recipients/<str:external_id>/push-tokens",
        push_tokens.RecipientPushTokensView.as_view(),
        name="recipient-push-tokens",
    ),
    path(
        "recipients/<str:external_id>/web-push-subscriptions",
        web_push.RecipientWebPushSubscriptionsView.as_view(),
        name="recipient-web-push-subscriptions",
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
        "inbox/web-push-subscriptions",
        web_push.InboxWebPushSubscriptionsView.as_view(),
        name="inbox-web-push-subscriptions",
    ),
    path("inbox/web-push-key", web_push.InboxWebPushKeyView.as_view(), name="inbox-web-push-key"),
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
