"""The registry API (predict, models, predictions, lifecycle): thin views that parse, authorize, call
one service and serialize."""
from __future__ import annotations

import base64
import hmac
from typing import Any

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import generics, permissions, serializers as drf_serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from engine.preprocessing import to_png_bytes
from mnistsite.clients import client_address
from mnistsite.errors import ApplicationError
from mnistsite.parsers import JSONParser
from mnistsite.schema import errors

from . import lifecycle, quality, shadow
from .labels import label_record
from .review import review_counts, review_next
from .filters import PredictionFilter
from .models import Label, LifecycleEvent, ModelVersion, Prediction
from .selectors import lifecycle_event_dict, lifecycle_events, mnist_random_sample, model_status, prediction_stats
from .serializers import (
    ActivateRequestSerializer,
    LabelRequestSerializer,
    LabelResultSerializer,
    ModelVersionSerializer,
    PredictBatchRequestSerializer,
    PredictBatchResultSerializer,
    PredictionResultSerializer,
    PredictionSerializer,
    PredictRequestSerializer,
    ReasonSerializer,
    ReviewLabelRequestSerializer,
    ReviewQueryParamsSerializer,
    StatsSerializer,
)
from .services import (
    Client,
    ModelAnswer,
    PredictionOutcome,
    label_key_digest,
    prediction_create,
    prediction_create_batch,
    prediction_label,
)

def _client(request: Request) -> Client:
    """The caller as recorded on a prediction. A browser on the site gets a session (for labelling)."""
    from_site = isinstance(request.successful_authenticator, SessionAuthentication) or (
        request.auth is None and settings.CSRF_COOKIE_NAME in request.COOKIES
    )
    session_key = ""
    if from_site:
        if not request.session.session_key:
            request.session.save()
        session_key = request.session.session_key or ""
    return Client(user=request.user, session_key=session_key, ip=client_address(request) or None,
                  source=Prediction.Source.SITE if from_site else Prediction.Source.API)


def _answer(answer: ModelAnswer) -> dict[str, Any]:
    # Rounded as stored predictions are, the confidence being the answer's own rounded probability.
    probabilities = [round(p, 6) for p in answer.probabilities]
    return {"model_version": answer.model.ref.as_dict(), "vetted": answer.model.ref.vetted, "digit": answer.digit,
            "confidence": probabilities[answer.digit], "probabilities": probabilities}


def _result(outcome: PredictionOutcome) -> dict[str, Any]:
    p = outcome.prediction
    body = {
        "id": p.pk,
        "digit": p.digit,
        "confidence": p.confidence,
        "probabilities": p.probabilities,
        "model_version": outcome.model.ref.as_dict(),
        "preprocessed": base64.b64encode(to_png_bytes(outcome.tensor)).decode("ascii"),
        "latency_ms": round(p.latency_ms, 3),
    }
    if outcome.comparisons:
        body["compare"] = [_answer(a) for a in outcome.comparisons]
    return body


class PredictView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_scope = "predict"
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    @extend_schema(
        summary="Recognize a drawn digit",
        request={"application/json": PredictRequestSerializer, "multipart/form-data": PredictRequestSerializer},
        responses={200: PredictionResultSerializer, **errors(
            400, 401, 403, 404, 413, 415, 422, 429, 503,
            s403="A model version that was never active (and did not ship) or is archived, for anyone but staff "
                 "(`model_not_public`); or a session-authenticated request without its CSRF token.",
            s404="No such model version (`model_not_found`).",
            s422="The image holds no drawing (`empty_drawing`).",
            s503="No model version can serve (`model_unavailable`).")},
    )
    def post(self, request: Request) -> Response:
        serializer = PredictRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        outcome = prediction_create(image=data["image"], client=_client(request), model_version_id=data.get("model"),
                                    compare=data["compare"], replaces=data.get("replaces"))
        return Response({**_result(outcome), "label_key": outcome.label_key})


class PredictBatchView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_scope = "predict"
    parser_classes = [JSONParser]

    @extend_schema(
        summary="Recognize several drawings in one request",
        description="Up to `PREDICT_BATCH_MAX` images (default 32). All or nothing: if one image is bad, "
                    "nothing is stored and the error names its index.",
        request=PredictBatchRequestSerializer,
        responses={200: PredictBatchResultSerializer, **errors(
            400, 401, 403, 404, 413, 415, 422, 429, 503,
            s403="A model version that was never active (and did not ship) or is archived, for anyone but staff "
                 "(`model_not_public`); or a session-authenticated request without its CSRF token.",
            s404="No such model version (`model_not_found`).",
            s422="An image holds no drawing (`empty_drawing`; `detail.index` names it).",
            s503="No model version can serve (`model_unavailable`).")},
    )
    def post(self, request: Request) -> Response:
        serializer = PredictBatchRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        outcomes = prediction_create_batch(images=data["images"], client=_client(request),
                                           model_version_id=data.get("model"))
        return Response({"results": [{**_result(o), "label_key": o.label_key} for o in outcomes]})


class ModelStatusView(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(summary="The active model version, whether it is loaded and healthy, and counts",
                   responses={200: inline_serializer("ModelStatus", {
                       "active": drf_serializers.DictField(allow_null=True),
                       "serving": drf_serializers.DictField(allow_null=True),
                       "loaded": drf_serializers.BooleanField(),
                       "healthy": drf_serializers.BooleanField(),
                       "error": drf_serializers.CharField(allow_null=True),
                       "loaded_versions": drf_serializers.ListField(child=drf_serializers.DictField()),
                       "counts": drf_serializers.DictField(),
                   }), **errors(401)})
    def get(self, request: Request) -> Response:
        return Response(model_status(staff=bool(request.user and request.user.is_staff)))


@extend_schema_view(get=extend_schema(responses={200: ModelVersionSerializer(many=True), **errors(401, 404)}))
class ModelVersionListView(generics.ListAPIView):
    permission_classes = [permissions.AllowAny]
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


@extend_schema_view(get=extend_schema(responses={200: ModelVersionSerializer, **errors(401, 404)}))
class ModelVersionDetailView(generics.RetrieveAPIView):
    permission_classes = [permissions.AllowAny]
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


def label_access(request: Request, prediction: Prediction) -> tuple[str, str] | None:
    """How the caller may label ``prediction`` — ``(via, giver)`` for its Label row — or None.

    Staff, or the client that made the prediction: same signed-in user, whoever holds the prediction's
    label key (given once in the predict reply), or the same browser session (with a CSRF token)."""
    user = request.user
    if user.is_authenticated and (user.is_staff or prediction.user_id == user.pk):
        return Label.Via.ACCOUNT, f"user:{user.pk}"
    label_key = request.data.get("label_key") if isinstance(request.data, dict) else None
    if isinstance(label_key, str) and prediction.label_key_digest and hmac.compare_digest(
            label_key_digest(label_key), prediction.label_key_digest):
        return Label.Via.LABEL_KEY, f"key:{prediction.pk}"
    key = request.session.session_key if hasattr(request, "session") else None
    if key and prediction.session_key and key == prediction.session_key:
        # The session cookie is the credential here, so the request must carry a CSRF token too.
        SessionAuthentication().enforce_csrf(request)
        return Label.Via.SESSION, f"session:{key}"
    return None


class IsPredictionClientOrStaff(permissions.BasePermission):
    """Staff, or the client that made the prediction (see ``label_access``)."""

    message = "Only the client that made this prediction (or staff) may label it."

    def has_object_permission(self, request: Request, view: Any, obj: Prediction) -> bool:
        if label_access(request, obj) is not None:
            return True
        if isinstance(request.data, dict) and request.data.get("label_key") is not None:
            # A key was sent, so "no credentials" (401) would mislead: it is the key that is wrong.
            raise ApplicationError("label_key_mismatch", "This label key does not match this prediction: use the "
                                   "label_key from the answer that made it.", status=403)
        return False


class PredictionLabelView(APIView):
    permission_classes = [IsPredictionClientOrStaff]

    @extend_schema(summary="Tell the correct digit for a prediction",
                   description="Recorded with who gave it and from which client network. A trusted source's "
                               "label (staff, an account staff trust) overrides visitors'; a visitor's label "
                               "is kept and shown, and trains or judges a version only as `LABELS_TRAIN_TRUST` "
                               "/ `LABELS_EVIDENCE_TRUST` allow (docs/trust.md). "
                               "`label` in the answer is the digit given.",
                   request=LabelRequestSerializer,
                   responses={200: LabelResultSerializer, **errors(
                       400, 401, 403, 404, 415,
                       s400="The label is not a digit 0-9 (`invalid_label`), or the body is malformed.",
                       s403="Not this prediction's client nor staff (`permission_denied`), or a `label_key` that "
                            "does not match (`label_key_mismatch`), or a session's request without its CSRF token.",
                       s404="No such prediction.")})
    def post(self, request: Request, pk: int) -> Response:
        prediction = get_object_or_404(Prediction, pk=pk)
        self.check_object_permissions(request, prediction)
        via, giver = label_access(request, prediction)
        serializer = LabelRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label = serializer.validated_data["label"]
        prediction = prediction_label(prediction=prediction, label=label, by=request.user, via=via, giver=giver,
                                      client_ip=client_address(request))
        return Response({"id": prediction.pk, "label": label, "digit": prediction.digit,
                         "correct": label == prediction.digit})


# ---------------------------------------------------------------------------- the review queue

REVIEW = inline_serializer("ReviewNext", {
    "items": drf_serializers.ListField(child=drf_serializers.DictField()),
    "counts": drf_serializers.DictField(), "models": drf_serializers.DictField(),
})


class ReviewNextView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="The next drawings to label in the review queue (staff)",
                   parameters=[ReviewQueryParamsSerializer], responses={200: REVIEW, **errors(400, 401, 403)})
    def get(self, request: Request) -> Response:
        params = ReviewQueryParamsSerializer(data=request.query_params.dict())
        params.is_valid(raise_exception=True)
        return Response(review_next(skip=params.validated_data["skip"], count=params.validated_data["count"]))


class ReviewLabelView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="Label a drawing from the review queue (staff): a digit, or \"x\" for not a digit",
                   request=ReviewLabelRequestSerializer,
                   responses={200: inline_serializer("ReviewLabelled", {
                       "id": drf_serializers.IntegerField(), "label": drf_serializers.IntegerField(allow_null=True),
                       "not_a_digit": drf_serializers.BooleanField(), "counts": drf_serializers.DictField(),
                   }), **errors(400, 401, 403, 404, 415,
                                s400='The label is not a digit 0-9 nor "x" (`invalid_label`), or the body is '
                                     'malformed.')})
    def post(self, request: Request, pk: int) -> Response:
        prediction = get_object_or_404(Prediction, pk=pk)
        serializer = ReviewLabelRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label_record(prediction=prediction, value=serializer.validated_data["label"], by=request.user,
                     via=Label.Via.REVIEW, client_ip=client_address(request))
        return Response({"id": prediction.pk, "label": prediction.label, "not_a_digit": prediction.not_a_digit,
                         "counts": review_counts()})


def _whole(minimum: int, maximum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


@extend_schema_view(get=extend_schema(
    # The filters' bounds (classifier.filters), which the filter backend's schema leaves out.
    parameters=[OpenApiParameter("digit", _whole(0, 9), description="The digit the model answered."),
                OpenApiParameter("label", _whole(0, 9), description="The digit a person said it is."),
                OpenApiParameter("model_version", _whole(1, 2**63 - 1), description="A model version's id.")],
    responses={200: PredictionSerializer(many=True), **errors(
        400, 401, 403, 404, s400="A filter's value is invalid (`invalid_request`).")}))
class PredictionListView(generics.ListAPIView):
    permission_classes = [permissions.IsAdminUser]
    serializer_class = PredictionSerializer
    queryset = Prediction.objects.select_related("model_version")
    filterset_class = PredictionFilter


class StatsView(APIView):
    """The statistics page's numbers: counts, accuracy per version, confusion matrix, quality over time."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        summary="Accuracy on labelled drawings per model version, confusion matrix, counts, quality over time",
        description="`quality`: per day (the last 60 at most) and model version, accuracy on labelled drawings and "
                    "mean confidence, with the changes of the active version. `quality_by_drawings`: the same "
                    "accuracy per `QUALITY_BUCKET` labelled drawings of each version, in the order drawn. "
                    "`quality_checks`: each version's last `QUALITY_WINDOW` labelled drawings against its "
                    "field-set accuracy; `state` is `warning` when lower by more than `QUALITY_WARNING_MARGIN`.",
        responses={200: StatsSerializer, **errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response({**prediction_stats(), **quality.quality_report()})


class MnistRandomView(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_scope = "predict"

    @extend_schema(summary="A random MNIST test digit and the serving model's answer",
                   responses={200: inline_serializer("MnistSample", {
                       "index": drf_serializers.IntegerField(), "label": drf_serializers.IntegerField(),
                       "image": drf_serializers.CharField(help_text="base64 PNG, 28x28, white ink on black"),
                       "prediction": drf_serializers.DictField(),
                   }), **errors(401, 429, 503, s503="The MNIST test set is not on this server "
                                                         "(`mnist_unavailable`), or no model version can serve.")})
    def get(self, request: Request) -> Response:
        staff = bool(request.user and request.user.is_active and request.user.is_staff)
        return Response(mnist_random_sample(staff=staff), status=status.HTTP_200_OK)


# ---------------------------------------------------------------------------- the model lifecycle

SWITCH = inline_serializer("LifecycleResult", {
    "model": ModelVersionSerializer(), "event": drf_serializers.DictField(allow_null=True),
})


def _switch_result(request: Request, version: ModelVersion) -> Response:
    event = lifecycle_events().filter(to_version=version).first()
    return Response({
        "model": ModelVersionSerializer(version, context={"request": request}).data,
        "event": lifecycle_event_dict(event) if event else None,
    })


def _reason(request: Request) -> str:
    serializer = ReasonSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["reason"]


class ModelActivateView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="Make a model version the active one (every server process switches within a second)",
                   description="A version that was active before, or shipped with the site, is activated as asked. "
                               "An archived version, or a candidate never active, is refused (409 "
                               "`activation_needs_gate`: promote it through the gate) unless `force` is true with a "
                               "`reason` (400 `reason_required` without one); the audit log then says `forced`.",
                   request=ActivateRequestSerializer, responses={200: SWITCH, **errors(400, 401, 403, 404, 409, 415)})
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        serializer = ActivateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return _switch_result(request, lifecycle.model_version_activate(
            version=version, by=request.user, reason=serializer.validated_data["reason"],
            force=serializer.validated_data["force"]))


class ModelRollbackView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="Activate the version that was active before the current one",
                   request=ReasonSerializer, responses={200: SWITCH, **errors(400, 401, 403, 409, 415)})
    def post(self, request: Request) -> Response:
        reason = _reason(request)
        return _switch_result(request, lifecycle.model_version_rollback(by=request.user, reason=reason))


class ModelArchiveView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="Archive a model version (not the active one)",
                   request=ReasonSerializer, responses={200: SWITCH, **errors(400, 401, 403, 404, 409, 415)})
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        reason = _reason(request)
        return _switch_result(request, lifecycle.model_version_archive(version=version, by=request.user, reason=reason))


class LifecycleEventListView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="The lifecycle audit log: who moved which version where, when and why",
                   operation_id="models_events_list",
                   responses={200: inline_serializer("LifecycleEvents", {
                       "count": drf_serializers.IntegerField(),
                       "next": drf_serializers.URLField(allow_null=True),
                       "previous": drf_serializers.URLField(allow_null=True),
                       "results": drf_serializers.ListField(child=drf_serializers.DictField()),
                   }), **errors(401, 403, 404)})
    def get(self, request: Request) -> Response:
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(lifecycle_events(), request, view=self)
        return paginator.get_paginated_response([lifecycle_event_dict(e) for e in page])


# ---------------------------------------------------------------------------- shadow evaluation

SHADOW = inline_serializer("ShadowResult", {
    "model": ModelVersionSerializer(), "event": drf_serializers.DictField(allow_null=True),
    "shadow": drf_serializers.DictField(),
})


def _shadow_result(request: Request, version: ModelVersion) -> Response:
    event = lifecycle_events().filter(to_version=version).first()
    return Response({
        "model": ModelVersionSerializer(version, context={"request": request}).data,
        "event": lifecycle_event_dict(event) if event else None,
        "shadow": shadow.shadow_report(version).as_dict(),
    })


class ModelShadowView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="A candidate's shadow evaluation: agreement with the active version, accuracy on "
                   "the drawings labelled since", responses={200: SHADOW, **errors(401, 403, 404)})
    def get(self, request: Request, pk: int) -> Response:
        return _shadow_result(request, get_object_or_404(ModelVersion, pk=pk))

    @extend_schema(summary="Put a candidate in shadow: it answers live drawings in the background, beside the "
                   "active version", request=ReasonSerializer,
                   responses={200: SHADOW, **errors(400, 401, 403, 404, 409, 415)})
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        reason = _reason(request)
        return _shadow_result(request, shadow.shadow_start(version=version, by=request.user, reason=reason))

    @extend_schema(summary="Take a candidate out of shadow (its shadow answers are kept)", request=ReasonSerializer,
                   responses={200: SHADOW, **errors(400, 401, 403, 404, 409, 415)})
    def delete(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        reason = _reason(request)
        return _shadow_result(request, shadow.shadow_stop(version=version, by=request.user, reason=reason))


class ModelPromoteView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(summary="Run the promotion gate on a candidate (MNIST test, field set, shadow traffic) and "
                   "activate it if the gate says so", request=ReasonSerializer,
                   responses={200: inline_serializer("PromoteResult", {
                       "promoted": drf_serializers.BooleanField(), "decision": drf_serializers.DictField(),
                       "model": ModelVersionSerializer(), "event": drf_serializers.DictField(allow_null=True),
                   }), **errors(400, 401, 403, 404, 409, 415)})
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        reason = _reason(request)
        decision = shadow.shadow_promote(version=version, by=request.user, reason=reason)
        version.refresh_from_db()
        event = lifecycle_events().filter(to_version=version, action=LifecycleEvent.Action.PROMOTE).first()
        return Response({
            "promoted": decision.promote, "decision": decision.as_dict(),
            "model": ModelVersionSerializer(version, context={"request": request}).data,
            "event": lifecycle_event_dict(event) if event and decision.promote else None,
        })
