from allauth.account.signals import user_signed_up
from django.dispatch import receiver

from accounts import services


@receiver(user_signed_up)
def give_new_user_an_organization(sender, request, user, **kwargs):
    services.personal_organization_create(user=user)
