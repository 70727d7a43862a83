"""The training API: thin views that parse, authorize, call one service and serialize."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, permissions, serializers as drf_serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mnistsite.schema import errors
from mnistsite.serializers import StrictSerializer

from . import selectors
from .filters import TrainingRunFilter
from .models import RetrainPolicy, RetrainPolicyEvent, TrainingRun
from .policy import policy_get, policy_pause, policy_resume, policy_status, policy_update
from .serializers import RetrainRequestSerializer, RunStartedSerializer
from .services import training_run_cancel, training_run_start

STATE = inline_serializer("RunState", {"id": drf_serializers.IntegerField(), "status": drf_serializers.CharField()})


class CanStartTraining(permissions.BasePermission):
    """Holders of the ``training.start_training_run`` permission (e.g. a service account's token)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("training.start_training_run"))


RUN_PERMISSIONS = [permissions.IsAdminUser | CanStartTraining]


def _absolute(request: Request, run: TrainingRun) -> dict[str, str]:
    scheme = "wss" if request.is_secure() else "ws"
    return {
        "url": request.build_absolute_uri(reverse("training-run-detail", args=[run.pk])),
        "ws_url": f"{scheme}://{request.get_host()}{selectors.run_ws_path(run.pk)}",
    }


class RetrainView(APIView):
    permission_classes = RUN_PERMISSIONS

    @extend_schema(
        summary="Start a training run",
        description="Queues a run (Celery worker, or a thread of the server without a broker) and answers at once. "
                    "Options left out take the architecture's recipe. Follow it at `url` or on the WebSocket `ws_url`.",
        request=RetrainRequestSerializer,
        responses={202: RunStartedSerializer, **errors(
            400, 401, 403, 409, 415, 503,
            s400="An option out of its bounds, an unknown option, or a combination that cannot train "
                 "(`invalid_config`: e.g. no `arch` and no `base_version`, `mnist_limit` leaving no batch, "
                 "`device` cuda without a GPU, a `base_version` that does not exist).",
            s409="Too many runs queued or running, yours or everyone's (`too_many_runs`: `detail` lists them).",
            s503="The run could not be queued: the broker is unreachable (`queue_unavailable`).")},
    )
    def post(self, request: Request) -> Response:
        serializer = RetrainRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_start(spec=serializer.validated_data, by=request.user)
        return Response({"id": run.pk, "status": run.status, **_absolute(request, run)}, status=status.HTTP_202_ACCEPTED)


class RunListView(generics.GenericAPIView):
    permission_classes = RUN_PERMISSIONS
    filterset_class = TrainingRunFilter

    def get_queryset(self):
        return selectors.runs_list()

    @extend_schema(summary="Training runs, newest first (filter: ?status=)", operation_id="runs_list",
                   # The page is described by hand, so the filter's parameter is too.
                   parameters=[OpenApiParameter("status", enum=TrainingRun.Status.values,
                                                description="Only runs in this state.")],
                   responses={200: inline_serializer("RunList", {
                       "count": drf_serializers.IntegerField(), "next": drf_serializers.URLField(allow_null=True),
                       "previous": drf_serializers.URLField(allow_null=True),
                       "results": drf_serializers.ListField(child=drf_serializers.DictField()),
                   }), **errors(400, 401, 403, 404, s400="`status` is not a run state (`invalid_request`).")})
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([{**selectors.run_summary(run), **_absolute(request, run)} for run in page])


class RunDetailView(APIView):
    permission_classes = RUN_PERMISSIONS

    @extend_schema(summary="A run's full state: config, progress, history, metrics, log, version",
                   responses={200: STATE, **errors(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(pk)
        if run is None:
            raise Http404
        return Response({**selectors.run_state(run), **_absolute(request, run)})


class RunCancelView(APIView):
    permission_classes = RUN_PERMISSIONS

    @extend_schema(summary="Cancel a run (a running one stops within one batch)", request=None,
                   responses={202: STATE, **errors(401, 403, 404, 409, s409="The run has already finished "
                                                                            "(`run_finished`).")})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(TrainingRun, pk=pk)
        run = training_run_cancel(run=run, by=request.user)
        run = selectors.run_get(run.pk)
        return Response({**selectors.run_state(run), **_absolute(request, run)}, status=status.HTTP_202_ACCEPTED)


# ---------------------------------------------------------------------------- the retraining policy


class PolicyUpdateSerializer(StrictSerializer):
    paused = drf_serializers.BooleanField(required=False, help_text="true pauses the policy, false resumes it.")
    reason = drf_serializers.CharField(required=False, allow_blank=True, max_length=500)
    min_new_labels = drf_serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    shadow_min_labels = drf_serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)


def _policy_state(policy: RetrainPolicy) -> dict[str, Any]:
    events = RetrainPolicyEvent.objects.select_related("by")[:20]
    return {
        "status": policy_status(policy),
        "enabled": settings.RETRAIN_POLICY_ENABLED,
        "paused": policy.paused,
        "paused_by": getattr(policy.paused_by, "username", None),
        "paused_at": policy.paused_at,
        "min_new_labels": policy.min_new_labels,
        "shadow_min_labels": policy.shadow_min_labels,
        "last_run": policy.last_run_id,
        "last_checked_at": policy.last_checked_at,
        "last_outcome": policy.last_outcome,
        "scheduler": settings.RETRAIN_POLICY_SCHEDULER,
        "interval_seconds": settings.RETRAIN_POLICY_INTERVAL_SECONDS,
        "events": [{"at": e.at, "action": e.action, "actor": e.actor, "by": getattr(e.by, "username", None),
                    "run": e.run_id, "version": e.version_id, "reason": e.reason} for e in events],
    }


POLICY_STATE = inline_serializer("RetrainPolicyState", {
    "status": drf_serializers.CharField(), "paused": drf_serializers.BooleanField(),
    "min_new_labels": drf_serializers.IntegerField(), "shadow_min_labels": drf_serializers.IntegerField(),
    "events": drf_serializers.ListField(child=drf_serializers.DictField()),
})


class PolicyView(APIView):
    """Staff only (the default permission): read the policy, pause or resume it, change its thresholds."""

    @extend_schema(summary="The automatic retraining policy: status, thresholds, recent actions",
                   responses={200: POLICY_STATE, **errors(401, 403)})
    def get(self, request: Request) -> Response:
        return Response(_policy_state(policy_get()))

    @extend_schema(summary="Pause or resume the retraining policy, or change its thresholds",
                   request=PolicyUpdateSerializer,
                   responses={200: POLICY_STATE, **errors(
                       400, 401, 403, 409, 415,
                       s409="Pausing a paused policy (`already_paused`), or resuming one that is not paused "
                            "(`not_paused`).")})
    def post(self, request: Request) -> Response:
        serializer = PolicyUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        reason = data.get("reason", "")
        if data.get("paused") is True:
            policy_pause(by=request.user, reason=reason)
        elif data.get("paused") is False:
            policy_resume(by=request.user, reason=reason)
        policy = policy_update(by=request.user, min_new_labels=data.get("min_new_labels"),
                               shadow_min_labels=data.get("shadow_min_labels"))
        return Response(_policy_state(policy))
