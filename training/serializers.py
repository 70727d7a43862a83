"""Request validation for the training and lifecycle API (semantic checks live in the services)."""
from __future__ import annotations

from rest_framework import serializers

from training.engine.nets import ARCHITECTURES

from .models import TrainingRun


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, so a typo ("epoch") is not silently ignored."""

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class RetrainRequestSerializer(StrictSerializer):
    arch = serializers.ChoiceField(choices=sorted(ARCHITECTURES), required=False,
                                   help_text="Architecture; required unless fine-tuning from base_version.")
    arch_config = serializers.DictField(required=False, help_text='Network config, e.g. {"widths": [8, 16, 32]} for cnn.')
    epochs = serializers.IntegerField(min_value=1, max_value=200, required=False)
    batch_size = serializers.IntegerField(min_value=2, max_value=8192, required=False)
    lr = serializers.FloatField(min_value=1e-7, max_value=10, required=False, help_text="Peak learning rate.")
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    augment = serializers.BooleanField(required=False)
    val_size = serializers.IntegerField(min_value=0, max_value=30000, required=False)
    device = serializers.ChoiceField(choices=["auto", "cpu", "cuda"], required=False,
                                     help_text="cuda runs go to the GPU workers' queue.")
    base_version = serializers.IntegerField(required=False, allow_null=True,
                                            help_text="Fine-tune from this model version; null or absent: from scratch.")
    use_drawings = serializers.BooleanField(required=False, help_text="Mix in the labelled user drawings (default true).")
    extra_repeat = serializers.IntegerField(min_value=0, max_value=100, required=False,
                                            help_text="How many times each labelled drawing is repeated per epoch.")
    mnist_limit = serializers.IntegerField(min_value=1, max_value=60000, required=False, allow_null=True,
                                           help_text="Train on the first N MNIST training images only (quick runs).")
    promote = serializers.BooleanField(required=False, help_text="Promote the result if it passes the gate.")
    name = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                 help_text="Version name (default: the architecture); its number increments.")



class ReasonSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RunStartedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices)
    url = serializers.URLField()
    ws_url = serializers.CharField()
