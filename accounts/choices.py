from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Scope(models.TextChoices):
    MANAGE = "manage", "Manage"
    PREDICT = "predict", "Predict"


ALL_SCOPES = [Scope.MANAGE.value, Scope.PREDICT.value]
