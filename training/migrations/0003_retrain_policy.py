"""Automatic retraining: the policy (one row), its audit log, and which runs it started (TrainingRun.trigger)."""

import django.core.validators
import django.db.models.deletion
import training.models
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('classifier', '0007_shadow'),
        ('training', '0002_lifecycleevent_moves_to_classifier'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='trainingrun',
            name='trigger',
            field=models.CharField(choices=[('person', 'started by a person'), ('policy', 'automatic retraining policy')], db_index=True, default='person', help_text='Who asked for it: a person (API, admin, dashboard) or the automatic retraining policy.', max_length=10),
        ),
        migrations.CreateModel(
            name='RetrainPolicyEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('action', models.CharField(choices=[('queued', 'queued a run'), ('shadow', 'put the result in shadow'), ('promoted', 'promoted the result'), ('kept', 'left the result a candidate'), ('failed', 'the run ended without a version'), ('paused', 'paused'), ('resumed', 'resumed'), ('changed', 'settings changed')], db_index=True, max_length=10)),
                ('actor', models.CharField(blank=True, help_text="'policy' for automatic actions; empty when a person (by) acted.", max_length=20)),
                ('reason', models.TextField(blank=True)),
                ('at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('run', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='policy_events', to='training.trainingrun')),
                ('version', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='classifier.modelversion')),
            ],
            options={
                'ordering': ['-at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='RetrainPolicy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('paused', models.BooleanField(default=False, help_text='Paused: the policy takes no action until resumed.')),
                ('paused_at', models.DateTimeField(blank=True, null=True)),
                ('pause_reason', models.TextField(blank=True)),
                ('min_new_labels', models.PositiveIntegerField(default=training.models._policy_min_new_labels, help_text='Queue a fine-tune once this many drawings got a usable label since the last automatic run.', validators=[django.core.validators.MinValueValidator(1)])),
                ('shadow_min_labels', models.PositiveIntegerField(default=training.models._policy_shadow_min_labels, help_text='Ask the gate once the candidate in shadow has answered this many drawings that were then labelled.', validators=[django.core.validators.MinValueValidator(1)])),
                ('label_watermark', models.BigIntegerField(default=0, help_text='The newest label (Label id) already counted: labels after it are new.')),
                ('last_checked_at', models.DateTimeField(blank=True, null=True)),
                ('last_outcome', models.TextField(blank=True, help_text='What the latest check found or did.')),
                ('decided_run', models.ForeignKey(blank=True, help_text='The latest automatic run whose outcome the policy has settled (promoted, kept as a candidate, failed).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='training.trainingrun')),
                ('last_run', models.ForeignKey(blank=True, help_text="The policy's latest automatic run.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='training.trainingrun')),
                ('paused_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'retraining policy',
                'verbose_name_plural': 'retraining policy',
                'constraints': [models.CheckConstraint(condition=models.Q(('id', 1)), name='retrain_policy_singleton')],
            },
        ),
    ]
