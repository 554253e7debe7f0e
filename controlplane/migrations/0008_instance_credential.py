import secrets

from django.db import migrations, models

import controlplane.models


def _one_each(apps, schema_editor):
    """A credential of its own for every instance already there (the column's default
    gave them all the same one)."""
    Instance = apps.get_model("controlplane", "Instance")
    for instance in Instance.objects.only("pk"):
        Instance.objects.filter(pk=instance.pk).update(credential=secrets.token_urlsafe(32))


class Migration(migrations.Migration):

    dependencies = [
        ("controlplane", "0007_shadow"),
    ]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="credential",
            field=models.CharField(default=controlplane.models.new_credential, editable=False, max_length=64),
        ),
        migrations.RunPython(_one_each, migrations.RunPython.noop),
    ]
