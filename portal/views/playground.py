"""The playground: chat with a model from the portal, through the real /v1 path.

The page carries no secret. Its script asks ``playground/key`` (a same-origin POST with the
CSRF token) for the session's playground key and keeps it in memory only, so the secret is
never in the page's HTML: not in a cached or saved copy of it, not in view-source, not in
what a browser keeps for the back button. Importing ``accounts.playground`` here (and so from
portal/urls.py, which every request resolves through before a sign-out can happen) is what
connects its sign-out receiver.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.playground import playground_key_for, playground_models


@login_required
@require_GET
def playground(request: HttpRequest) -> HttpResponse:
    models = playground_models()
    return render(request, "portal/playground.html", {
        "models": models, "default_model": models[0] if models else ""})


@never_cache  # the answer is a live secret: no cache may keep it
@require_POST
def playground_key(request: HttpRequest) -> HttpResponse:
    # A script's request: a JSON refusal, not the sign-in page a redirect would give it.
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Sign in to use the playground."}, status=403)
    return JsonResponse({"key": playground_key_for(request)})
