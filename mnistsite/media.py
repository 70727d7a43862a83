"""Media files for staff only: drawings, checkpoints and anything else under the media storage.

Nothing in media is public: drawings are what visitors drew, and checkpoint names derive from the sha256
the API publishes. ``MEDIA_URL`` is therefore answered by this view, in every layout: staff get the file,
everyone else the same 404 as for a file that does not exist (so names cannot be probed).

Files are read through Django's storage API (``default_storage``), never by filesystem path, so a bucket
can replace the disk. With ``MEDIA_ACCEL_REDIRECT`` set (nginx in front, deploy/nginx.conf), the view only
decides: it answers with an empty body and ``X-Accel-Redirect: <prefix><name>``, and nginx sends the file
from its ``internal`` location, so no server worker is held while a large checkpoint downloads.
"""
from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

# Shown in the browser (an <img> on the stats page, the review queue, the admin); everything else downloads.
INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}


def may_download_media(user) -> bool:
    return bool(user and user.is_active and user.is_staff)


def _clean_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in {"", ".", ".."} for part in name.split("/")):
        raise Http404("No such file.")
    return str(path)


@require_safe
def media_file(request: HttpRequest, name: str) -> HttpResponse:
    """One stored file, to staff; 404 to anyone else and for names that do not exist."""
    if not may_download_media(request.user):
        raise Http404("No such file.")
    name = _clean_name(name)
    try:
        if not default_storage.exists(name):
            raise Http404("No such file.")
    except SuspiciousFileOperation:
        raise Http404("No such file.") from None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = content_type in INLINE_TYPES
    if settings.MEDIA_ACCEL_REDIRECT:
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.MEDIA_ACCEL_REDIRECT + quote(name)
        disposition = "inline" if inline else "attachment"
        response["Content-Disposition"] = f"{disposition}; filename=\"{quote(PurePosixPath(name).name)}\""
    else:
        response = FileResponse(default_storage.open(name, "rb"), content_type=content_type,
                                as_attachment=not inline, filename=PurePosixPath(name).name)
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    return response
