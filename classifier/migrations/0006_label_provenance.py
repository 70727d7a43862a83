"""Label provenance: every label a person gives is a Label row (who, staff or visitor, how, when); the
prediction keeps the effective label, and may be marked "not a digit". Predictions get the sha256 of
their 28x28 input (dataset import finds exact duplicates by it) and an "import" source.

Backfill: each prediction labelled before this migration gets one Label row (via "backfill") with its
label, who gave it (staff or not, as that account is now) and when, and is marked staff-labelled when
that person is staff; every prediction gets its input's sha256. Reversing drops the new fields and
rows; the effective labels stay as they are.
"""
import hashlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def backfill(apps, schema_editor):
    Prediction = apps.get_model("classifier", "Prediction")
    Label = apps.get_model("classifier", "Label")
    rows = Prediction.objects.order_by("id").values_list("id", "input_pixels")
    hashes: dict[int, str] = {}
    for pk, raw in rows.iterator(chunk_size=2000):
        hashes[pk] = hashlib.sha256(bytes(raw or b"")).hexdigest()
        if len(hashes) >= 2000:
            _write_hashes(Prediction, hashes)
    _write_hashes(Prediction, hashes)

    labelled = (Prediction.objects.filter(label__isnull=False).select_related("labelled_by")
                .order_by("id").iterator(chunk_size=2000))
    batch = []
    staff_ids = []
    for prediction in labelled:
        by = prediction.labelled_by
        by_staff = bool(by is not None and by.is_active and by.is_staff)
        if by_staff:
            staff_ids.append(prediction.pk)
        batch.append(Label(
            prediction_id=prediction.pk, digit=prediction.label, not_a_digit=False, given_by=by, by_staff=by_staff,
            giver=f"user:{by.pk}" if by is not None else f"prediction:{prediction.pk}", via="backfill",
            at=prediction.labelled_at or prediction.created_at,
        ))
        if len(batch) >= 1000:
            Label.objects.bulk_create(batch)
            batch = []
    Label.objects.bulk_create(batch)
    for start in range(0, len(staff_ids), 1000):
        Prediction.objects.filter(pk__in=staff_ids[start:start + 1000]).update(label_by_staff=True)


def _write_hashes(Prediction, hashes: dict[int, str]) -> None:
    for pk, digest in hashes.items():
        Prediction.objects.filter(pk=pk).update(input_sha256=digest)
    hashes.clear()


class Migration(migrations.Migration):

    dependencies = [
        ("classifier", "0005_register_retrained_shipped_models"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="prediction",
            name="input_sha256",
            field=models.CharField(
                blank=True, db_index=True, max_length=64,
                help_text="sha256 of input_pixels: finds exact duplicates (dataset import).",
            ),
        ),
        migrations.AddField(
            model_name="prediction",
            name="not_a_digit",
            field=models.BooleanField(default=False, help_text="A person said this is not a digit: it never trains."),
        ),
        migrations.AddField(
            model_name="prediction",
            name="label_by_staff",
            field=models.BooleanField(default=False, help_text="The effective label (or 'not a digit') is staff's."),
        ),
        migrations.AlterField(
            model_name="prediction",
            name="source",
            field=models.CharField(
                choices=[("site", "site"), ("api", "API"), ("import", "import")], default="api", max_length=6,
            ),
        ),
        migrations.AddConstraint(
            model_name="prediction",
            constraint=models.CheckConstraint(
                condition=models.Q(("not_a_digit", False), ("label__isnull", True), _connector="OR"),
                name="prediction_not_a_digit_has_no_label",
            ),
        ),
        migrations.CreateModel(
            name="Label",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("digit", models.PositiveSmallIntegerField(blank=True, help_text="Null when not a digit.", null=True)),
                ("not_a_digit", models.BooleanField(default=False)),
                ("by_staff", models.BooleanField(db_index=True, default=False)),
                ("giver", models.CharField(blank=True, help_text="Who, to tell visitors apart.", max_length=64)),
                ("via", models.CharField(choices=[
                    ("session", "browser session"), ("label_key", "label key"),
                    ("account", "account (API token or session)"), ("review", "review queue"), ("admin", "admin"),
                    ("import", "dataset import"), ("backfill", "recorded before label provenance"),
                ], max_length=10)),
                ("at", models.DateTimeField(db_index=True)),
                ("given_by", models.ForeignKey(
                    blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                    to=settings.AUTH_USER_MODEL,
                )),
                ("prediction", models.ForeignKey(
                    on_delete=django.db.models.deletion.CASCADE, related_name="labels", to="classifier.prediction",
                )),
            ],
            options={
                "ordering": ["-at", "-id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("digit__isnull", True), ("not_a_digit", True)),
                            models.Q(("digit__gte", 0), ("digit__lte", 9), ("not_a_digit", False)),
                            _connector="OR",
                        ),
                        name="label_digit_or_not_a_digit",
                    ),
                ],
            },
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
