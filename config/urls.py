from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from notifications.api.middleware import api_not_found
from notifications.api.problems import django_problem_view
from notifications.health import healthz, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("notifications.api.urls")),
    path("api/v1/", include("triggers.api.urls")),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(
            url_name="schema",
            template_name="api_docs/redoc.html",
            authentication_classes=[],
            permission_classes=[],
        ),
        name="redoc",
    ),
    re_path(r"^api/", api_not_found),
    path("", include("delivery.urls")),
    path("healthz", healthz),
    path("readyz", readyz),
    path("", include("django_prometheus.urls")),
    path("", include("notifications.pages")),
]

handler400 = django_problem_view(400)
handler403 = django_problem_view(403)
handler404 = django_problem_view(404)
handler500 = django_problem_view(500)
