"""LifecycleEvent moves to the classifier app (the model registry's audit log); its rows stay.

The link to the training run becomes a plain id (the registry does not depend on training), so the
foreign-key constraint is dropped here; then the model leaves this app's state without touching the
table, which ``classifier.0003`` takes over.
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="lifecycleevent",
            name="run",
            field=models.BigIntegerField(blank=True, null=True, db_index=True, db_column="run_id"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="LifecycleEvent")],
            database_operations=[],
        ),
    ]
