from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mnistsite import accounts, errors
from mnistsite.media import media_file

urlpatterns = [
    # The audit log's admin list moved with its model from the training app to the registry.
    path("admin/training/lifecycleevent/",
         RedirectView.as_view(pattern_name="admin:classifier_lifecycleevent_changelist", permanent=True)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/token/", accounts.TokenObtainView.as_view(), name="api-token"),
    path("account/login/", accounts.AccountLoginView.as_view(), name="account-login"),
    path("account/logout/", accounts.AccountLogoutView.as_view(), name="account-logout"),
    path("account/token/", accounts.TokenPageView.as_view(), name="account-token"),
    path("api/", include("classifier.api_urls")),
    path("api/", include("training.api_urls")),
    path("dashboard/", include("dashboard.urls")),
    path("", include("classifier.page_urls")),
    # Last: any other path under /api/ (newlines and all) answers the JSON error shape, DEBUG or not (an
    # endpoint's path without its final slash: a redirect for GET and HEAD; see errors.api_not_found).
    re_path(r"^api/", errors.api_not_found, name="api-not-found"),
]

# Drawings and checkpoints are private: staff only, in every layout (mnistsite.media; behind nginx the file
# itself is sent by nginx's internal location, MEDIA_ACCEL_REDIRECT).
urlpatterns.append(path(f"{settings.MEDIA_URL.strip('/')}/<path:name>", media_file, name="media-file"))

# Under /api/, even a URL nobody answers and an unexpected failure get the one JSON error shape.
handler404 = "mnistsite.errors.page_not_found"
handler500 = "mnistsite.errors.server_error"
