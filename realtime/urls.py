from django.conf import settings
from django.urls import path

from realtime import views

urlpatterns = [
    path("", views.home, name="home"),
]

# The bell demo issues a recipient token to anyone who asks: it exists only
# while DEBUG is on, never in a deployment.
if settings.DEBUG:
    urlpatterns += [
        path("demo/", views.demo, name="demo"),
        path("demo/token", views.demo_token, name="demo-token"),
        path("demo/send", views.demo_send, name="demo-send"),
    ]
