from django.urls import path

from . import views

urlpatterns = [
    path("retrain/", views.RetrainView.as_view(), name="training-retrain"),
    path("runs/", views.RunListView.as_view(), name="training-run-list"),
    path("runs/<int:pk>/", views.RunDetailView.as_view(), name="training-run-detail"),
    path("runs/<int:pk>/cancel/", views.RunCancelView.as_view(), name="training-run-cancel"),
    path("policy/", views.PolicyView.as_view(), name="training-policy"),
]
