"""The Models page: what the user may call, at what price, an estimate of a request's cost
and snippets to call a model. The estimate is computed here from a GET form (so it works
without JavaScript); estimator.js recomputes it as the numbers are typed, in integers."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal.selectors_catalogue import CatalogueModel, catalogue_of, estimate_micros
from portal.views.dashboard import api_base_url

MAX_ESTIMATE_TOKENS = 100_000_000


class EstimateForm(forms.Form):
    model = forms.CharField(required=False, max_length=200)
    prompt_tokens = forms.IntegerField(min_value=0, max_value=MAX_ESTIMATE_TOKENS, initial=1000,
                                       required=False, label="Tokens in")
    completion_tokens = forms.IntegerField(min_value=0, max_value=MAX_ESTIMATE_TOKENS,
                                           initial=500, required=False, label="Tokens out")


def _chosen(catalogue: list[CatalogueModel], name: str) -> CatalogueModel | None:
    by_name = {entry.name: entry for entry in catalogue}
    if name in by_name:
        return by_name[name]
    # The first model the keys allow, else the first at all.
    return next((entry for entry in catalogue if entry.allowed),
                catalogue[0] if catalogue else None)


@login_required
@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    catalogue = catalogue_of(user=request.user)
    form = EstimateForm(request.GET or None)
    data = form.cleaned_data if form.is_valid() else {}
    chosen = _chosen(catalogue, data.get("model") or "")
    prompt_tokens = data.get("prompt_tokens")
    completion_tokens = data.get("completion_tokens")
    prompt_tokens = 1000 if prompt_tokens is None else prompt_tokens
    completion_tokens = 500 if completion_tokens is None else completion_tokens
    estimate = None if chosen is None else estimate_micros(
        model=chosen, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return render(request, "portal/models.html", {
        "catalogue": catalogue,
        "chosen": chosen,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "form_errors": form.errors if request.GET else {},
        "estimate_micros": estimate,
        "base_url": api_base_url(request),
        "any_refused": any(not entry.allowed for entry in catalogue),
    })
