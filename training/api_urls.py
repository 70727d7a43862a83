from django.urls import path

from . import views

urlpatterns = [
    path("retrain/", views.RetrainView.as_view(), name="training-retrain"),
    path("runs/", views.RunListView.as_view(), name="training-run-list"),
    path("runs/<int:pk>/", views.RunDetailView.as_view(), name="training-run-detail"),
    path("runs/<int:pk>/cancel/", views.RunCancelView.as_view(), name="training-run-cancel"),
    path("models/<int:pk>/activate/", views.ModelActivateView.as_view(), name="model-activate"),
    path("models/<int:pk>/archive/", views.ModelArchiveView.as_view(), name="model-archive"),
    path("models/rollback/", views.ModelRollbackView.as_view(), name="model-rollback"),
    path("models/events/", views.LifecycleEventListView.as_view(), name="model-events"),
]
