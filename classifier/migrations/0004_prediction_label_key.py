"""Label keys for predictions; model versions know whether they were shipped with the code."""
from django.db import migrations, models

SHIPPED_NOTE_PREFIX = "Shipped with the code"  # what migration 0002 writes into a shipped version's notes


def mark_shipped(apps, schema_editor):
    ModelVersion = apps.get_model("classifier", "ModelVersion")
    ModelVersion.objects.filter(notes__startswith=SHIPPED_NOTE_PREFIX).update(shipped=True)


class Migration(migrations.Migration):

    dependencies = [
        ("classifier", "0003_lifecycleevent"),
    ]

    operations = [
        migrations.AddField(
            model_name="prediction",
            name="label_key_digest",
            field=models.CharField(
                blank=True, max_length=64,
                help_text="sha256 of the secret given once in the predict reply; whoever holds it may label "
                          "this prediction.",
            ),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="shipped",
            field=models.BooleanField(default=False, help_text="Shipped with the code (training/shipped/)."),
        ),
        migrations.RunPython(mark_shipped, migrations.RunPython.noop),
    ]
