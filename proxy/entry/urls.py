from django.urls import path, re_path

from proxy.dialects.completions.views import CompletionsView
from proxy.dialects.embeddings.views import EmbeddingsView
from proxy.dialects.messages.views import (
    CountTokensView,
    MessagesView,
    unknown_messages_route,
)
from proxy.dialects.responses.views import (
    ResponseDetailView,
    ResponseInputTokensView,
    ResponsesView,
)
from proxy.entry import views

urlpatterns = [
    path("chat/completions", views.ChatCompletionsView.as_view()),
    # The other dialects, each parsed into the same path (proxy.dialects).
    path("responses", ResponsesView.as_view()),
    path("responses/input_tokens", ResponseInputTokensView.as_view()),
    re_path(r"^responses/(?P<response_id>[^/]+)$", ResponseDetailView.as_view()),
    path("messages", MessagesView.as_view()),
    path("messages/count_tokens", CountTokensView.as_view()),
    re_path(r"^messages/(?P<rest>.+)$", unknown_messages_route),
    path("embeddings", EmbeddingsView.as_view()),
    path("completions", CompletionsView.as_view()),
    path("models", views.ModelListView.as_view()),
    re_path(r"^models/(?P<model>.+)$", views.ModelDetailView.as_view()),
    # Anything else under /v1 still answers in OpenAI's format.
    re_path(r"^(?P<rest>.*)$", views.unknown_route),
]
