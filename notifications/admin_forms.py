"""The admin's forms: a notification type checked by parse_type, a recipient
with its preferences checked by the preferences service."""

from __future__ import annotations

import json

from django import forms

from common.choices import Channel
from common.errors import InvalidInput
from notifications.admin_preferences import (
    PREFERENCE_FIELDS,
    DailyCapsField,
    PreferenceGridField,
    preference_document,
    preference_error_field,
    preference_initial,
    type_categories,
)
from notifications.admin_widgets import RuleWidget, TemplateGridWidget
from notifications.models import NotificationType, Recipient
from notifications.services.types import TYPE_FIELDS, parse_type
from preferences.services import parse_preferences, preferences_get

CHANNEL_CHOICES = [(c.value, c.label) for c in Channel]


class ChannelsField(forms.MultipleChoiceField):
    """Channels as checkboxes. Which lists are allowed is parse_type's to say,
    so the field only collects them; a comma-separated value (what the plain
    array field posted, and scripts still may) is split."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs):
        super().__init__(choices=CHANNEL_CHOICES, required=False, **kwargs)

    def to_python(self, value):
        return [
            part.strip() for item in super().to_python(value) for part in item.split(",") if part
        ]

    def validate(self, value):
        pass


class JsonDocumentField(forms.Field):
    """A JSON column edited by a structured widget; its shape is parse_type's to judge."""

    def __init__(self, *, null: bool, **kwargs):
        self.null = null
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        if isinstance(value, str):
            if not value.strip():
                return None if self.null else {}
            try:
                return json.loads(value)
            except ValueError as exc:
                raise forms.ValidationError(f"Enter valid JSON: {exc}") from exc
        if value is None and not self.null:
            return {}
        return value

    def has_changed(self, initial, data):
        return self.to_python(initial) != self.to_python(data)


class NotificationTypeForm(forms.ModelForm):
    """The admin's form checks a type by the rules `PUT /notification-types/{key}` uses."""

    channels = ChannelsField()
    required_channels = ChannelsField(help_text="Sent whatever the recipient's preferences say.")
    templates = JsonDocumentField(null=False, widget=TemplateGridWidget)
    digest = JsonDocumentField(null=True, widget=RuleWidget("digest"))
    throttle = JsonDocumentField(null=True, widget=RuleWidget("throttle"))
    escalation = JsonDocumentField(null=True, widget=RuleWidget("escalation"))

    class Meta:
        model = NotificationType
        fields = (
            "key",
            "category",
            "priority",
            "channels",
            "required_channels",
            "default_locale",
            "templates",
            "sample_data",
            "digest",
            "throttle",
            "escalation",
            "retired_at",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        grid = self.fields["templates"].widget
        grid.sample_data = self._sample_data()
        grid.default_locale = self._value("default_locale") or "en"

    def _value(self, name: str) -> object:
        if self.is_bound:
            return self.data.get(self.add_prefix(name))
        return self.initial.get(name)

    def _sample_data(self) -> dict:
        sample = self._value("sample_data")
        if isinstance(sample, str):
            try:
                sample = json.loads(sample)
            except ValueError:
                sample = {}
        return sample if isinstance(sample, dict) else {}

    def clean(self) -> dict:
        cleaned = super().clean()
        if any(name in self.errors for name in (*TYPE_FIELDS, "key")):
            return cleaned  # a field that did not parse has its message; the rules need it whole
        body = {name: cleaned[name] for name in TYPE_FIELDS if name in cleaned}
        try:
            fields = parse_type(cleaned.get("key", ""), body)
        except InvalidInput as error:
            self._add_type_errors(error.errors)
            return cleaned
        cleaned.update((name, fields[name]) for name in TYPE_FIELDS if name in cleaned)
        return cleaned

    def _add_type_errors(self, errors: dict[str, list[str]]) -> None:
        """Each problem under its field, and beside the input it is about."""
        for path, problems in errors.items():
            field = path.split(".", 1)[0]
            widget = self.fields[field].widget if field in self.fields else None
            if hasattr(widget, "path_errors"):
                widget.path_errors.setdefault(path, []).extend(problems)
            for problem in problems:
                self.add_error(
                    field if field in self.fields else None,
                    problem if path == field else f"{path}: {problem}",
                )


class RecipientForm(forms.ModelForm):
    """A recipient, and on its change page its preferences as a grid of
    category × channel, quiet hours and daily caps. The document they make is
    checked by the preferences service (parse_preferences) here and written by
    preferences_put when the recipient is saved (RecipientAdmin.save_related)."""

    preferences = PreferenceGridField()
    pref_quiet_start = forms.CharField(
        label="Quiet hours from", required=False, help_text="HH:MM, the recipient's time zone"
    )
    pref_quiet_end = forms.CharField(label="until", required=False, help_text="HH:MM")
    pref_caps = DailyCapsField()

    class Meta:
        model = Recipient
        fields = ("external_id", "email", "phone", "locale", "timezone", "data", "user")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.preferences_document: dict | None = None
        if self.instance.pk is None:  # the add page: preferences come once the recipient exists
            for name in PREFERENCE_FIELDS:
                self.fields.pop(name, None)
            return
        document = preferences_get(recipient_id=self.instance.pk)
        self.fields["preferences"].widget.setup(document=document, categories=type_categories())
        self.initial.update(preference_initial(document))

    def clean(self) -> dict:
        cleaned = super().clean()
        if "preferences" not in self.fields or any(n in self.errors for n in PREFERENCE_FIELDS):
            return cleaned
        document = preference_document(cleaned)
        try:
            parse_preferences(document)
        except InvalidInput as error:
            for path, problems in error.errors.items():
                for problem in problems:
                    self.add_error(preference_error_field(path), f"{path}: {problem}")
            return cleaned
        self.preferences_document = document
        return cleaned

    def preferences_changed(self) -> bool:
        return self.preferences_document is not None and any(
            name in self.changed_data for name in PREFERENCE_FIELDS
        )
