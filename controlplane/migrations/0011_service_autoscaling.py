import django.db.models.deletion
from django.db import migrations, models


def fixed_at_their_replicas(apps, schema_editor):
    """Existing services keep the count they run: min = max = replicas (not autoscaled)."""
    Service = apps.get_model("controlplane", "Service")
    Service.objects.update(min_replicas=models.F("replicas"), max_replicas=models.F("replicas"))


class Migration(migrations.Migration):

    dependencies = [
        ('controlplane', '0010_service_timeout'),
    ]

    operations = [
        migrations.AddField(
            model_name='service',
            name='min_replicas',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='service',
            name='max_replicas',
            field=models.PositiveIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='service',
            name='target_in_flight',
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='service',
            name='scale_down_delay_s',
            field=models.PositiveIntegerField(default=60),
        ),
        migrations.RunPython(fixed_at_their_replicas, migrations.RunPython.noop),
        migrations.CreateModel(
            name='AutoscalerDecision',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('from_replicas', models.PositiveIntegerField()),
                ('to_replicas', models.PositiveIntegerField()),
                ('in_flight', models.FloatField()),
                ('mode', models.CharField(choices=[('stable', 'Stable'), ('panic', 'Panic')], max_length=16)),
                ('reason', models.TextField()),
                ('service', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='autoscaler_decisions', to='controlplane.service')),
            ],
            options={
                'ordering': ['-at', '-id'],
                'indexes': [models.Index(fields=['service', '-at'], name='autoscaler_decision_recent')],
            },
        ),
    ]
