"""The training API: thin views that parse, authorize, call one service and serialize."""
from __future__ import annotations

from typing import Any

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, permissions, serializers as drf_serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import selectors
from .filters import TrainingRunFilter
from .models import TrainingRun
from .serializers import RetrainRequestSerializer, RunStartedSerializer
from .services import training_run_cancel, training_run_start

ERROR = OpenApiResponse(description='`{"error": {"code", "message", "detail"}}`')
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
        responses={202: RunStartedSerializer, 400: ERROR, 401: ERROR, 403: ERROR},
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
                   }), 401: ERROR, 403: ERROR})
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response([{**selectors.run_summary(run), **_absolute(request, run)} for run in page])


class RunDetailView(APIView):
    permission_classes = RUN_PERMISSIONS

    @extend_schema(summary="A run's full state: config, progress, history, metrics, log, version",
                   responses={200: STATE, 401: ERROR, 403: ERROR, 404: ERROR})
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(pk)
        if run is None:
            raise Http404
        return Response({**selectors.run_state(run), **_absolute(request, run)})


class RunCancelView(APIView):
    permission_classes = RUN_PERMISSIONS

    @extend_schema(summary="Cancel a run (a running one stops within one batch)", request=None,
                   responses={202: STATE, 401: ERROR, 403: ERROR, 404: ERROR, 409: ERROR})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(TrainingRun, pk=pk)
        run = training_run_cancel(run=run, by=request.user)
        run = selectors.run_get(run.pk)
        return Response({**selectors.run_state(run), **_absolute(request, run)}, status=status.HTTP_202_ACCEPTED)
