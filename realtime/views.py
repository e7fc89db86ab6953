from django.http import HttpResponse


def home(request):
    return HttpResponse(
        "<!doctype html><title>Clarion</title><h1>Clarion</h1>"
        '<ul><li><a href="/api/docs/">API docs</a></li><li><a href="/admin/">Admin</a></li>'
        '<li><a href="/metrics">Metrics</a></li><li><a href="/readyz">Readiness</a></li></ul>'
    )
