from django.urls import path

from realtime import views

urlpatterns = [
    path("", views.home, name="home"),
]
