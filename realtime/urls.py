from django.urls import path

from realtime import views

urlpatterns = [
    path("", views.home, name="home"),
    path("demo/", views.demo, name="demo"),
    path("demo/token", views.demo_token, name="demo-token"),
    path("demo/send", views.demo_send, name="demo-send"),
]
