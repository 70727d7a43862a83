from django.urls import path

from . import views

urlpatterns = [
    path("predict/", views.PredictView.as_view(), name="predict"),
    path("predict/batch/", views.PredictBatchView.as_view(), name="predict-batch"),
    path("model-status/", views.ModelStatusView.as_view(), name="model-status"),
    path("models/", views.ModelVersionListView.as_view(), name="model-list"),
    path("models/<int:pk>/", views.ModelVersionDetailView.as_view(), name="model-detail"),
    path("models/<int:pk>/activate/", views.ModelActivateView.as_view(), name="model-activate"),
    path("models/<int:pk>/archive/", views.ModelArchiveView.as_view(), name="model-archive"),
    path("models/<int:pk>/shadow/", views.ModelShadowView.as_view(), name="model-shadow"),
    path("models/<int:pk>/promote/", views.ModelPromoteView.as_view(), name="model-promote"),
    path("models/rollback/", views.ModelRollbackView.as_view(), name="model-rollback"),
    path("models/events/", views.LifecycleEventListView.as_view(), name="model-events"),
    path("predictions/", views.PredictionListView.as_view(), name="prediction-list"),
    path("predictions/<int:pk>/label/", views.PredictionLabelView.as_view(), name="prediction-label"),
    path("review/", views.ReviewNextView.as_view(), name="review-next"),
    path("review/<int:pk>/label/", views.ReviewLabelView.as_view(), name="review-label"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("mnist/random/", views.MnistRandomView.as_view(), name="mnist-random"),
]
