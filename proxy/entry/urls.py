from django.urls import path, re_path

from proxy.entry import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view()),
    path("models", views.ModelListView.as_view()),
    re_path(r"^models/(?P<model>.+)$", views.ModelDetailView.as_view()),
    # Anything else under /v1 still answers in OpenAI's format.
    re_path(r"^(?P<rest>.*)$", views.unknown_route),
]
