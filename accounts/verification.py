"""Email verification: where Modelbay really sends mail, a person verifies their email
address before they upload code (models, model versions) or create API keys.

``MODELBAY_REQUIRE_VERIFIED_EMAIL`` (settings) turns the rule on; it is on by default when
``EMAIL_BACKEND`` delivers mail, off with the console and locmem backends of development
and tests. ``require_verified_email`` is the rule; ``VerifiedEmailMiddleware``
(accounts.middleware) applies it to the console's and the API's guarded actions
(``GUARDED_VIEWS``), in one place. A call made with an API key acts for its organization,
not for a person: keys are made only by verified accounts (or by the operator's
``create_api_key`` command).
"""

from allauth.account.models import EmailAddress
from django.conf import settings

from modelbay.core.errors import Forbidden

VERIFY_FIRST = (
    "Verify your email address before you upload models or create API keys: open the link "
    "we sent to it, or send a new one from your account's email page (/accounts/email/)."
)

# POSTs to these views (URL names) upload code or create API keys.
GUARDED_VIEWS = frozenset(
    {
        "api-keys",  # POST /api/v1/keys
        "api-models",  # POST /api/v1/models
        "api-model-versions",  # POST /api/v1/models/{slug}/versions
        "console:key_list",  # the console's key form
        "console:model_list",  # the console's upload form
        "console:model_version_add",  # the console's new-version form
    }
)


def verification_required() -> bool:
    return bool(getattr(settings, "MODELBAY_REQUIRE_VERIFIED_EMAIL", False))


def email_verified(user) -> bool:
    """Whether the account's own email address (``user.email``) is verified."""
    if not getattr(user, "pk", None) or not getattr(user, "email", ""):
        return False
    return EmailAddress.objects.filter(user_id=user.pk, email__iexact=user.email, verified=True).exists()


def require_verified_email(user) -> None:
    """Forbidden when the rule is on and this person's email address is not verified."""
    if verification_required() and not email_verified(user):
        raise Forbidden(VERIFY_FIRST)


def guarded(request) -> bool:
    """A request that uploads code or creates an API key."""
    match = getattr(request, "resolver_match", None)
    return request.method == "POST" and match is not None and match.view_name in GUARDED_VIEWS
