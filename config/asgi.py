"""ASGI entry: websockets through Channels, HTTP through Django's WSGI handler.

HTTP requests run the WSGI application on a fixed pool of threads (a2wsgi):
one thread hop per request, and each thread keeps its database connection.
Django's own ASGI handler makes a new thread per request and hops into it
several times (signals, view, response close); asgiref's WsgiToAsgi runs
every request on one shared thread. Measured here, same server and load:
/healthz 277 req/s through Django's ASGI handler, 802 req/s through
WsgiToAsgi; POST /events 230/s through WsgiToAsgi (serialised on one
thread, with errors under load) — see README.md, "Choice of server".
"""

import os

from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
HTTP_THREADS = int(os.environ.get("WEB_THREADS", "8"))
http_application = WSGIMiddleware(get_wsgi_application(), workers=HTTP_THREADS)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from notifications.api.intake import EventIntake  # noqa: E402
from notifications.api.routing import websocket_urlpatterns  # noqa: E402

# Websocket origins: the hosts of ALLOWED_HOSTS and the origins of CSRF_TRUSTED_ORIGINS.
allowed_origins = [*settings.ALLOWED_HOSTS, *settings.CSRF_TRUSTED_ORIGINS]

application = ProtocolTypeRouter(
    {
        # Event intake answers POST /api/v1/events(/batch) itself (group commit).
        "http": EventIntake(http_application),
        "websocket": OriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), allowed_origins
        ),
    }
)
