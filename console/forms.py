from datetime import datetime, time

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.choices import ALL_SCOPES, Scope
from console.errors import user_message
from controlplane import resources
from controlplane.choices import ServiceNetwork
from controlplane.models import Release, Service
from marketplace.models import AppIcon, Plan
from modelbay.core.errors import DomainError

_PACKAGE_HELP = "A bare .onnx file, or a .zip / .tar.gz package holding modelbay.yaml."
_NETWORK_HELP = (
    "By default the model can open no connection at all; outbound access lets it call the internet, "
    "never the platform or other instances."
)
# Room for the form's other fields and the multipart framing around the file (as the API).
_MULTIPART_OVERHEAD = 64 * 1024


def add_api_error(form: forms.Form, error: DomainError) -> None:
    """Show a service's error on the form field it concerns (``resources.cpu`` on ``cpu``),
    else above the form."""
    field = (getattr(error, "field", None) or "").rpartition(".")[2]
    form.add_error(field if field in form.fields else None, user_message(error))


def oversized_upload_error(request) -> str | None:
    """The error for a request whose declared length (``Content-Length``) is over what an
    upload may be, else None; known before anything of the body is read or written to disk."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    limit = settings.MODELBAY_MAX_UPLOAD_BYTES
    if declared <= limit + _MULTIPART_OVERHEAD:
        return None
    return f"The file is too large: uploads are limited to {limit} bytes ({filesizeformat(limit)})."


def refused_upload_form(form_class, error: str) -> forms.Form:
    """An unbound ``form_class`` showing ``error`` on its file: a form bound to the request
    would read its body, which is what the refusal avoids."""
    form = form_class()
    form.cleaned_data = {}
    form.add_error("file", error)
    return form


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


class ResourcesForm(forms.Form):
    """What one instance may use. An empty field is the installation's default; the limits
    are checked by the service functions (``resources.check``), as for the API."""

    cpu = forms.FloatField(required=False, label="CPU")
    memory_mb = forms.IntegerField(required=False, label="Memory (MB)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        defaults = resources.effective({}).as_dict()
        for name, (least, most) in resources.limits().items():
            field = self.fields[name]
            field.widget.attrs.update(min=least, max=most, placeholder=defaults[name])
            field.help_text = f"{least} to {most}; empty for the default ({defaults[name]})."

    def resources(self) -> dict:
        """The request for ``service_create`` / ``service_update``; ``None`` means the default."""
        return {name: self.cleaned_data[name] for name in resources.limits()}

    def changes(self) -> dict:
        return {"resources": self.resources()}

    def done_message(self, service) -> str:
        limits = resources.effective(service.resources)
        return f"{service.name}: {limits.cpu} CPU and {limits.memory_mb} MB per instance."


class DeployForm(ResourcesForm):
    field_order = ["name", "model", "version", "replicas"]

    name = forms.CharField(max_length=200)
    model = forms.ChoiceField()
    version = forms.IntegerField(min_value=1, required=False, help_text="Leave empty for the latest version.")
    replicas = forms.IntegerField(min_value=1, initial=1)
    # Optional like on the API: left out, the service gets no network.
    network = forms.TypedChoiceField(
        choices=ServiceNetwork.choices,
        initial=ServiceNetwork.NONE,
        required=False,
        empty_value=ServiceNetwork.NONE,
        help_text=_NETWORK_HELP,
    )

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
    """A fixed number of replicas (autoscaling off)."""

    replicas = forms.IntegerField(min_value=1)

    def changes(self) -> dict:
        """The keyword arguments for ``service_update``."""
        return {"replicas": self.cleaned_data["replicas"]}

    def done_message(self, service) -> str:
        return f"Scaling {service.name} to {service.replicas} replicas."


class AutoscalingForm(forms.Form):
    """Replicas that follow the load, within bounds; ``service_update`` checks the limits
    (as for the API) and its errors on ``autoscaling.<setting>`` land on that input."""

    min_replicas = forms.IntegerField(label="Min replicas")
    max_replicas = forms.IntegerField(label="Max replicas")
    target_in_flight = forms.IntegerField(required=False, label="Calls in flight per replica")
    scale_down_delay_s = forms.IntegerField(label="Scale-down delay (s)")
    scale_to_zero_after_s = forms.IntegerField(required=False, label="Scale to zero after (s)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        most = settings.MODELBAY_MAX_REPLICAS
        default_target = settings.MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT
        self.fields["min_replicas"].widget.attrs.update(min=0, max=most)
        self.fields["min_replicas"].help_text = "0: no instance runs while no call comes (scale to zero)."
        self.fields["max_replicas"].widget.attrs.update(min=1, max=most)
        self.fields["max_replicas"].help_text = f"Up to {most}. Equal to min: a fixed count."
        target = self.fields["target_in_flight"]
        target.widget.attrs.update(min=1, max=Service.MAX_TARGET_IN_FLIGHT, placeholder=default_target)
        target.help_text = (
            f"Replicas are added when calls in flight pass this per replica; empty for the default ({default_target})."
        )
        delay = self.fields["scale_down_delay_s"]
        delay.widget.attrs.update(min=0, max=Service.MAX_SCALE_DOWN_DELAY_S)
        delay.help_text = "How long the load must ask for fewer replicas before they are removed."
        idle = self.fields["scale_to_zero_after_s"]
        idle.widget.attrs.update(min=Service.MIN_SCALE_TO_ZERO_AFTER_S, max=Service.MAX_SCALE_TO_ZERO_AFTER_S)
        idle.help_text = (
            "With min 0: how long without a call before no instance runs. The next call waits while one starts."
        )

    @classmethod
    def for_service(cls, service):
        return cls(initial={name: getattr(service, name) for name in cls.base_fields})

    def changes(self) -> dict:
        """The keyword arguments for ``service_update`` (an empty idle time keeps the service's)."""
        autoscaling = dict(self.cleaned_data)
        if autoscaling["scale_to_zero_after_s"] is None:
            del autoscaling["scale_to_zero_after_s"]
        return {"autoscaling": autoscaling}

    def done_message(self, service) -> str:
        if not service.is_autoscaled:
            return f"Scaling {service.name} to {service.replicas} replicas."
        zero = f", to zero after {service.scale_to_zero_after_s} s without a call" if not service.min_replicas else ""
        return f"Autoscaling {service.name} between {service.min_replicas} and {service.max_replicas} replicas{zero}."


class NetworkForm(forms.Form):
    """What the service's instances may connect to; a change starts them again."""

    network = forms.ChoiceField(choices=ServiceNetwork.choices, help_text=_NETWORK_HELP)

    def changes(self) -> dict:
        """The keyword arguments for ``service_update``."""
        return {"network": self.cleaned_data["network"]}

    def done_message(self, service) -> str:
        return f"Network of {service.name}: {service.get_network_display()}."


class VersionAddForm(forms.Form):
    """Another version of the service's model, to run beside the others (``version_deploy``)."""

    version = forms.IntegerField(widget=forms.Select)

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        running = {d.model_version.version for d in service.live_deployments()}
        self.versions = [v.version for v in service.model.versions.all() if v.version not in running]
        self.fields["version"].widget.choices = [(v, f"v{v}") for v in reversed(self.versions)]

    def changes(self) -> dict:
        """The keyword arguments for ``version_deploy``."""
        return {"version": self.cleaned_data["version"]}

    def done_message(self, service) -> str:
        return f"Version {self.cleaned_data['version']} added beside the others, without traffic."


class TrafficForm(forms.Form):
    """One share in percent per live version, named by its number; ``traffic_set`` checks
    the split, and its errors on ``weights.<version>`` land on that version's input."""

    prefix = "weights"

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        for deployment in service.live_deployments():
            version = deployment.model_version.version
            self.fields[str(version)] = forms.IntegerField(
                label=f"v{version}",
                required=False,
                initial=deployment.weight,
                widget=forms.NumberInput(attrs={"min": 0, "max": 100}),
            )

    def changes(self) -> dict:
        """The keyword arguments for ``traffic_set``; an empty input is left out (it gets 0)."""
        weights = {int(version): weight for version, weight in self.cleaned_data.items() if weight is not None}
        return {"weights": weights}

    def done_message(self, service) -> str:
        split = ", ".join(f"v{version} {weight}%" for version, weight in self.changes()["weights"].items())
        return f"Traffic of {service.name}: {split}."


class ReleaseForm(forms.Form):
    """A gray release of another version (``release_start``, which checks the steps, the
    interval and the version); error rates are asked in percent."""

    version = forms.IntegerField(widget=forms.Select)
    steps = forms.CharField(
        initial="10, 50, 100", help_text="The new version's share at each step, in percent, rising to 100."
    )
    interval_s = forms.IntegerField(label="Seconds per step", min_value=1, max_value=86_400, initial=60)
    max_error_rate = forms.FloatField(
        label="Max error rate (%)",
        min_value=0,
        max_value=100,
        initial=5,
        help_text="Above this share of failed calls (5xx, timeouts) in a step, it rolls back.",
    )
    max_p99_ms = forms.FloatField(
        label="Max p99 (ms)", min_value=1, required=False, help_text="Empty for no latency bound."
    )
    max_error_rate_increase = forms.FloatField(
        label="Max error rate rise (points)",
        min_value=0,
        max_value=100,
        initial=Release.DEFAULT_MAX_ERROR_RATE_INCREASE * 100,
        help_text="How far its error rate may exceed the running version's, in percentage points.",
    )
    max_p99_ratio = forms.FloatField(
        label="Max p99 ratio",
        min_value=1,
        max_value=100,
        initial=Release.DEFAULT_MAX_P99_RATIO,
        help_text="How many times the running version's p99 its p99 may be.",
    )
    min_calls = forms.IntegerField(
        label="Min calls to judge",
        min_value=1,
        max_value=1_000_000,
        initial=Release.DEFAULT_MIN_CALLS,
        help_text="Calls each version needs in a step before it is judged; short of them it waits, then pauses.",
    )

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        current = {d.model_version.version for d in service.live_deployments() if d.weight == 100}
        self.versions = [v.version for v in service.model.versions.all() if v.version not in current]
        self.fields["version"].widget.choices = [(v, f"v{v}") for v in reversed(self.versions)]

    def clean_steps(self) -> list[int]:
        try:
            return [int(step) for step in self.cleaned_data["steps"].replace(",", " ").split()]
        except ValueError:
            raise forms.ValidationError("Write whole percentages separated by commas, like 10, 50, 100.") from None

    def changes(self) -> dict:
        """The keyword arguments for ``release_start``."""
        data = self.cleaned_data
        return {
            **data,
            "max_error_rate": data["max_error_rate"] / 100,
            "max_error_rate_increase": data["max_error_rate_increase"] / 100,
        }

    def done_message(self, service) -> str:
        return (
            f"Release of version {self.cleaned_data['version']} started: it takes "
            f"{self.cleaned_data['steps'][0]}% of the calls once its instances are ready."
        )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(choices=Scope.choices, initial=ALL_SCOPES, widget=forms.CheckboxSelectMultiple)
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


# --- marketplace -----------------------------------------------------------------------------
class MarketplaceSearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    category = forms.SlugField(required=False, max_length=40)

    def query(self) -> dict:
        """The arguments for ``published_listings``: what was asked, or everything."""
        if self.is_valid():
            return {"q": self.cleaned_data["q"].strip(), "category": self.cleaned_data["category"]}
        return {"q": "", "category": ""}


class SubscribeForm(forms.Form):
    """A plan of the listing, by name (``subscribe`` checks it belongs to the listing)."""

    plan = forms.SlugField(max_length=40, error_messages={"required": "Pick a plan."})


class ExampleField(forms.JSONField):
    """A JSON example in a text box: an empty box when there is none (not ``null``)."""

    def __init__(self, **kwargs):
        widget = forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"})
        super().__init__(required=False, widget=widget, **kwargs)

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class ListingPageForm(forms.Form):
    """What a listing's page shows: its title, text, category, icon and examples."""

    title = forms.CharField(max_length=120)
    summary = forms.CharField(max_length=300, required=False)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 5}), help_text="Markdown: headings, lists, links, code."
    )
    category = forms.SlugField(max_length=40, required=False, help_text="One word, like vision or text.")
    icon = forms.ChoiceField(choices=[("", "Default (puzzle piece)"), *AppIcon.choices], required=False)
    example_input = ExampleField(help_text='A request body, like {"inputs": [[0, 1]]}.')
    example_output = ExampleField()

    def page(self) -> dict:
        """The page's fields, as ``listing_create`` and ``listing_update`` take them."""
        return {name: self.cleaned_data[name] for name in ListingPageForm.base_fields}


PLAN_TERMS = ("monthly_quota", "rate_limit_per_s", "max_in_flight", "price_per_1k")


class PlanForm(forms.Form):
    """One plan of a listing: its name and terms."""

    plan_name = forms.SlugField(max_length=40, label="Plan name")
    monthly_quota = forms.IntegerField(min_value=1, max_value=2**31 - 1, label="Calls a month")
    rate_limit_per_s = forms.IntegerField(min_value=1, max_value=2**31 - 1, label="Calls a second")
    max_in_flight = forms.IntegerField(
        required=False, min_value=1, max_value=Plan.MAX_IN_FLIGHT_LIMIT, label="Calls in flight per subscriber"
    )
    price_per_1k = forms.DecimalField(min_value=0, max_digits=10, decimal_places=2, label="Price per 1,000 calls")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        default = settings.MODELBAY_APP_MAX_IN_FLIGHT
        in_flight = self.fields["max_in_flight"]
        in_flight.help_text = (
            f"How many calls one subscriber may have under way at once, 1 to 1,000; blank: the platform's default, "
            f"{default}. Calls beyond it wait in a short queue, else answer 429."
        )
        in_flight.widget.attrs["placeholder"] = str(default)

    def plan(self) -> dict:
        """The plan's name and terms, as ``listing_create`` and ``listing_update`` take them."""
        terms = {name: self.cleaned_data[name] for name in PLAN_TERMS}
        return {"name": self.cleaned_data["plan_name"], **terms}


class ListingForm(ListingPageForm, PlanForm):
    """A draft listing of one of the organization's services, with its first plan."""

    service = forms.ChoiceField()
    slug = forms.SlugField(max_length=64, help_text="The app's address in the marketplace, unique across it.")
    field_order = ["service", "title", "slug", *ListingPageForm.base_fields]

    def __init__(self, *args, services, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service"].choices = [(service.slug, service.name) for service in services]
        self.fields["plan_name"].initial = "free"
        self.fields["monthly_quota"].initial = 1000
        self.fields["rate_limit_per_s"].initial = 5
        self.fields["price_per_1k"].initial = 0

    def listing(self) -> dict:
        """The keyword arguments for ``listing_create``."""
        data = self.cleaned_data
        return {"service_slug": data["service"], "slug": data["slug"], "plans": [self.plan()], **self.page()}


class PlanEditForm(PlanForm):
    """A plan in the listing's edit form: left blank (the extra row) or marked, it is dropped."""

    remove = forms.BooleanField(required=False, label="Stop offering")


class BasePlanFormSet(forms.BaseFormSet):
    def plans(self) -> list[dict]:
        """The plans to offer: the filled rows not marked to stop (a blank extra row has no data)."""
        return [form.plan() for form in self.forms if form.cleaned_data and not form.cleaned_data["remove"]]


PlanFormSet = forms.formset_factory(PlanEditForm, formset=BasePlanFormSet, extra=1)


def listing_edit_forms(listing, data=None) -> tuple[ListingPageForm, BasePlanFormSet]:
    """The listing's page form and its plans' forms, filled with what it offers now."""
    page = ListingPageForm(data, initial={name: getattr(listing, name) for name in ListingPageForm.base_fields})
    initial = [
        {"plan_name": plan.name, **{name: getattr(plan, name) for name in PLAN_TERMS}} for plan in listing.offered_plans
    ]
    return page, PlanFormSet(data, initial=initial, prefix="plans")
