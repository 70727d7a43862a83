"""Shadow evaluation: a candidate may be put in shadow (``ModelVersion.shadow_since``) and answer live
drawings in the background; its answers are ``ShadowPrediction`` rows beside the prediction. The audit
log gets the "shadow" / "unshadow" actions and ``actor`` ("policy" for automatic actions)."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('classifier', '0006_label_provenance'),
    ]

    operations = [
        migrations.AddField(
            model_name='lifecycleevent',
            name='actor',
            field=models.CharField(blank=True, help_text="'policy' for automatic actions; empty when a person (by) acted", max_length=20),
        ),
        migrations.AddField(
            model_name='modelversion',
            name='shadow_since',
            field=models.DateTimeField(blank=True, db_index=True, help_text='In shadow since then: it answers live drawings in the background, beside the active version.', null=True),
        ),
        migrations.AlterField(
            model_name='lifecycleevent',
            name='action',
            field=models.CharField(choices=[('register', 'registered'), ('activate', 'activated'), ('promote', 'promoted by the gate'), ('rollback', 'rolled back'), ('archive', 'archived'), ('shadow', 'entered shadow'), ('unshadow', 'left shadow')], db_index=True, max_length=10),
        ),
        migrations.CreateModel(
            name='ShadowPrediction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('digit', models.PositiveSmallIntegerField()),
                ('confidence', models.FloatField()),
                ('probabilities', models.JSONField(help_text='Ten probabilities, digit 0 first.')),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('prediction', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='shadow_predictions', to='classifier.prediction')),
                ('version', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='shadow_predictions', to='classifier.modelversion')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'constraints': [models.UniqueConstraint(fields=('prediction', 'version'), name='unique_shadow_prediction_version'), models.CheckConstraint(condition=models.Q(('digit__gte', 0), ('digit__lte', 9)), name='shadow_prediction_digit_0_9')],
            },
        ),
    ]
