from datetime import datetime, time

from django import forms
from django.utils import timezone
from rest_framework.exceptions import APIException

from accounts.choices import ALL_SCOPES, Scope

_PACKAGE_HELP = "A bare .onnx file, or a .zip / .tar.gz package holding modelbay.yaml."


def add_api_error(form: forms.Form, error: APIException) -> None:
    """Show a service's error on the form field it concerns, else above the form."""
    field = getattr(error, "field", None)
    form.add_error(field if field in form.fields else None, str(error.detail))


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=200)


class OrganizationSwitchForm(forms.Form):
    organization = forms.IntegerField()
    next = forms.CharField(required=False)


class ModelUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(help_text=_PACKAGE_HELP)


class ModelVersionForm(forms.Form):
    file = forms.FileField(help_text=_PACKAGE_HELP)


class DeployForm(forms.Form):
    name = forms.CharField(max_length=200)
    model = forms.ChoiceField()
    version = forms.IntegerField(min_value=1, required=False, help_text="Leave empty for the latest version.")
    replicas = forms.IntegerField(min_value=1, initial=1)

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(model.slug, model.name) for model in models]

    @classmethod
    def for_model(cls, model, versions):
        """The form on a model's page: the model is fixed, the version picked from its own."""
        form = cls(models=[model], initial={"model": model.slug, "name": model.name})
        form.fields["model"].widget = forms.HiddenInput()
        choices = [("", "Latest")] + [(v.version, f"v{v.version}") for v in reversed(versions)]
        form.fields["version"].widget = forms.Select(choices=choices)
        form.fields["version"].help_text = ""
        return form


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(min_value=1)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=ALL_SCOPES, widget=forms.CheckboxSelectMultiple
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        help_text="Optional. The key stops working at the start of this day (UTC).",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def clean_expires_on(self):
        day = self.cleaned_data["expires_on"]
        if day is not None and day <= timezone.now().date():
            raise forms.ValidationError("Pick a day in the future.")
        return day

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data["expires_on"]
        return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone()) if day else None
