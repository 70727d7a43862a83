"""The lifecycle audit log joins the model registry: state only, the table and its rows are kept,
then the table takes this app's name."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("classifier", "0002_register_shipped_models"),
        ("training", "0002_lifecycleevent_moves_to_classifier"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="LifecycleEvent",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("action", models.CharField(choices=[("register", "registered"), ("activate", "activated"), ("promote", "promoted by the gate"), ("rollback", "rolled back"), ("archive", "archived")], db_index=True, max_length=10)),
                        ("run_id", models.BigIntegerField(blank=True, db_index=True, null=True)),
                        ("reason", models.TextField(blank=True)),
                        ("at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL)),
                        ("from_version", models.ForeignKey(blank=True, help_text="For activations: the version that was active before.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="classifier.modelversion")),
                        ("to_version", models.ForeignKey(blank=True, help_text="The version acted on (the newly active one for activations).", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="lifecycle_events", to="classifier.modelversion")),
                    ],
                    options={"ordering": ["-at", "-id"], "db_table": "training_lifecycleevent"},
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="lifecycleevent", table=None),
    ]
