"""The HTML pages, included by the project at the site root."""
from django.urls import path

from classifier import pages, review_page

app_name = "pages"

urlpatterns = [
    path("", pages.DrawView.as_view(), name="draw"),
    path("stats/", pages.StatsPageView.as_view(), name="stats"),
    path("review/", review_page.ReviewPageView.as_view(), name="review"),
    path("favicon.ico", pages.favicon, name="favicon"),
]
