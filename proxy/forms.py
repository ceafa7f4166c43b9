"""Admin forms for upstream workers. They parse input; the checks are proxy.services'."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MinValueValidator
from django.utils.html import escape

from proxy.models import Worker
from proxy.services import WorkerError, worker_clean_endpoint, worker_clean_name

KEEP_KEY_HELP = "A key is stored (never shown). Leave this empty to keep it, or type a new one."
NO_KEY_HELP = "No key is stored. Stored encrypted; it cannot be shown again."
HEADERS_HELP = ("One header per line, as <code>Name: value</code>, sent on every call to the "
                "upstream, e.g. <code>x-portkey-provider: openai</code>. Stored encrypted; the "
                "values are never shown again, only the names.")
KEEP_HEADERS_HELP = ("Stored: {names} (values never shown). Leave this empty to keep them, or "
                     "type the whole set again to replace them.")
DEFAULT_AUTH_LABEL = "The kind's own (Bearer; x-api-key for Anthropic)"


def parse_header_lines(lines: Iterable[str], *, what: str = "Line") -> dict[str, str]:
    """``["x-a: 1", "", "x-b: 2"]`` -> ``{"x-a": "1", "x-b": "2"}``, checked by the worker's
    rules; a ValidationError otherwise. A message never quotes a line: a line may be a
    secret pasted without its name."""
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValidationError(f"{what} {number} has no colon: write each header as "
                                  "Name: value.")
        name = name.strip()
        if name.lower() in seen:
            raise ValidationError(f"The header {name[:40]} is given twice.")
        seen.add(name.lower())
        headers[name] = value
    return Worker.check_extra_headers(headers)


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never sends its value back to the browser, not even when the form is
    shown again with errors (as PasswordInput(render_value=False) does for the key)."""

    def format_value(self, value: Any) -> None:
        return None


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
    extra_headers = forms.CharField(
        label="Extra headers", required=False, strip=True, help_text=HEADERS_HELP,
        widget=WriteOnlyTextarea(attrs={"rows": 3, "autocomplete": "off",
                                        "spellcheck": "false"}),
    )
    clear_extra_headers = forms.BooleanField(
        label="Remove the stored extra headers", required=False,
    )

    class Meta:
        model = Worker
        fields = ("name", "kind", "base_url", "cap_field", "auth_header", "api_version",
                  "native_dialects", "enabled", "priority", "weight", "max_concurrency",
                  "connect_timeout_s", "first_byte_timeout_s", "total_timeout_s")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.has_api_key:
            self.fields["api_key"].help_text = KEEP_KEY_HELP
        if self.instance._state.adding:
            self.fields.pop("clear_api_key", None)  # nothing to remove yet
            self.fields.pop("clear_extra_headers", None)
        elif self.instance.extra_headers_encrypted:
            self.fields["extra_headers"].help_text = KEEP_HEADERS_HELP.format(
                names=escape(_stored_names(self.instance)))
        self.fields["auth_header"].choices = [("", DEFAULT_AUTH_LABEL), *Worker.Auth.choices]
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

    def clean_extra_headers(self) -> dict[str, str]:
        return parse_header_lines(self.cleaned_data.get("extra_headers", "").splitlines())

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
        if cleaned.get("extra_headers") and cleaned.get("clear_extra_headers"):
            self.add_error("clear_extra_headers", "Either type new extra headers or remove "
                                                  "the stored ones, not both.")
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()  # copies the model fields onto the instance
        if self.errors:
            return
        if self.cleaned_data.get("api_key"):
            self.instance.set_api_key(self.cleaned_data["api_key"])
        elif self.cleaned_data.get("clear_api_key"):
            self.instance.api_key_encrypted = ""
        # Otherwise the stored key is kept as it is; the same for the extra headers.
        if self.cleaned_data.get("extra_headers"):
            self.instance.set_extra_headers(self.cleaned_data["extra_headers"])
        elif self.cleaned_data.get("clear_extra_headers"):
            self.instance.extra_headers_encrypted = ""


def _stored_names(worker: Worker) -> str:
    try:
        return ", ".join(worker.extra_header_names)
    except ImproperlyConfigured:
        return "headers that cannot be decrypted with ROUTER_ENCRYPTION_KEYS"


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
