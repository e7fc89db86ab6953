"""ASGI entry: websockets through Channels, HTTP through Django's WSGI handler.

HTTP requests run the WSGI application in asgiref's pooled threads
(WsgiToAsgi): one thread hop per request. Django's own ASGI handler makes a
new thread per request and hops into it several times (signals, view,
response close); measured here it served a third of the requests per second
for the same sync views (see README, "Choice of server").
"""
import os

from asgiref.wsgi import WsgiToAsgi
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
http_application = WsgiToAsgi(get_wsgi_application())

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from realtime.routing import websocket_urlpatterns  # noqa: E402

# Websocket origins: the hosts of ALLOWED_HOSTS and the origins of CSRF_TRUSTED_ORIGINS.
allowed_origins = [*settings.ALLOWED_HOSTS, *settings.CSRF_TRUSTED_ORIGINS]

application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), allowed_origins),
    }
)
