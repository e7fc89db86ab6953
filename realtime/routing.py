"""Websocket routes; the inbox consumer arrives with the live bell."""
websocket_urlpatterns: list = []
