"""Admin forms for upstream workers. They parse input; the checks are proxy.services'."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator

from proxy.models import Worker
from proxy.services import WorkerError, worker_clean_endpoint, worker_clean_name

KEEP_KEY_HELP = "A key is stored (never shown). Leave this empty to keep it, or type a new one."
NO_KEY_HELP = "No key is stored. Stored encrypted; it cannot be shown again."


class WorkerAdminForm(forms.ModelForm):
    """The worker's settings, with its upstream secret as a write-only field."""

    # A plain text field: the service's check (http/https, no credentials) is the only one,
    # and forms.URLField would add a scheme the staff member did not type.
    base_url = forms.CharField(
        label="Base URL", required=False, max_length=500,
        help_text="e.g. https://api.openai.com/v1; required for OpenAI-compatible workers, "
        "not used by the mock.",
    )
    api_key = forms.CharField(
        label="Upstream API key", required=False, strip=True,
        # render_value=False: neither the stored key nor a just-typed one is ever sent back
        # to the browser, not even when the form is shown again with errors.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=NO_KEY_HELP,
    )
    clear_api_key = forms.BooleanField(
        label="Remove the stored key", required=False,
        help_text="The worker then calls its upstream without an Authorization header.",
    )

    class Meta:
        model = Worker
        fields = ("name", "kind", "base_url", "cap_field", "enabled", "priority", "weight",
                  "max_concurrency", "connect_timeout_s", "first_byte_timeout_s",
                  "total_timeout_s")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.has_api_key:
            self.fields["api_key"].help_text = KEEP_KEY_HELP
        if self.instance._state.adding:
            self.fields.pop("clear_api_key", None)  # nothing to remove yet
        # The same limits as the service and the database's checks, as messages per field.
        for name in ("weight", "max_concurrency"):
            self.fields[name].validators.append(MinValueValidator(1))
            self.fields[name].widget.attrs["min"] = 1

    def _clean_timeout(self, name: str) -> float:
        value = self.cleaned_data.get(name)
        if value is not None and value <= 0:
            raise ValidationError("A timeout must be more than 0 seconds.")
        return value

    def clean_connect_timeout_s(self) -> float:
        return self._clean_timeout("connect_timeout_s")

    def clean_first_byte_timeout_s(self) -> float:
        return self._clean_timeout("first_byte_timeout_s")

    def clean_total_timeout_s(self) -> float:
        return self._clean_timeout("total_timeout_s")

    def clean_name(self) -> str:
        try:
            return worker_clean_name(self.cleaned_data.get("name", ""))
        except WorkerError as exc:
            raise ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("kind")
        if kind:  # else the kind field already reports its own error
            try:
                cleaned["base_url"] = worker_clean_endpoint(
                    kind=kind, base_url=cleaned.get("base_url", ""))
            except WorkerError as exc:
                self.add_error("base_url", str(exc))
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Either type a new key or remove the stored one, "
                                            "not both.")
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()  # copies the model fields onto the instance
        if self.errors:
            return
        if self.cleaned_data.get("api_key"):
            self.instance.set_api_key(self.cleaned_data["api_key"])
        elif self.cleaned_data.get("clear_api_key"):
            self.instance.api_key_encrypted = ""
        # Otherwise the stored key is kept as it is.


class WorkerModelInlineForm(forms.ModelForm):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("upstream_model") and cleaned["upstream_model"] == cleaned.get("model"):
            cleaned["upstream_model"] = ""  # the same name: stored as "same as the client's"
        return cleaned


class WorkerModelInlineFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        kept = [form for form in self.forms
                if form.cleaned_data.get("model") and not form.cleaned_data.get("DELETE")]
        if not kept:
            raise ValidationError("A worker must serve at least one model.")
