"""mnistsite settings. Every deployment-specific value comes from the environment.

The defaults give a safe single-process development run: SQLite, no external services.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mnistsite.logs import logging_config

from mnistsite.clients import parse_trusted_proxies

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# On by default for the one-command run (`make run`) and the tests; the production entry points
# (`python -m mnistsite.serve http|ws`, `manage.py worker`) refuse to start unless DEBUG=false is set
# (mnistsite.serve.require_production_debug_off). docs/operations/production.md lists what to set.
DEBUG = env_bool("DEBUG", True)
# Development only: a fixed, clearly-marked key so sessions survive restarts. Never accepted with DEBUG off,
# nor is the placeholder of deploy/mnistsite.env.example.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
KNOWN_BAD_SECRET_KEYS = frozenset({DEVELOPMENT_SECRET_KEY, "change-me-to-a-long-random-string"})
SECRET_KEY_MIN_LENGTH = 32
SECRET_KEY_MIN_DISTINCT = 10


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` must not sign a production site's sessions and tokens, or None."""
    if not key:
        return "must be set when DEBUG is off"
    if key in KNOWN_BAD_SECRET_KEYS or "change-me" in key.lower() or key.startswith("django-insecure-"):
        return "is a published placeholder or development key"
    if len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < SECRET_KEY_MIN_DISTINCT:
        return (f"is too weak: use at least {SECRET_KEY_MIN_LENGTH} characters, {SECRET_KEY_MIN_DISTINCT} of them "
                "different")
    return None


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not DEBUG:
    _problem = secret_key_problem(SECRET_KEY)
    if _problem:
        raise ImproperlyConfigured(
            f"SECRET_KEY {_problem}; generate one with: python -c "
            "\"import secrets; print(secrets.token_urlsafe(50))\"")
elif not SECRET_KEY:
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
SILENCED_SYSTEM_CHECKS: list[str] = []
if BEHIND_TLS_PROXY:  # the proxy terminates TLS and says so in X-Forwarded-Proto: the site is HTTPS only
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # A request the proxy got over plain HTTP is redirected to HTTPS (paths in SECURE_REDIRECT_EXEMPT, regular
    # expressions without the leading slash, are not: e.g. a probe that talks to the server directly).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = env_list("SECURE_REDIRECT_EXEMPT", [])
    # HSTS: browsers use HTTPS only, for this long (seconds; start lower, e.g. 3600, while trying TLS out).
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31_536_000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading is the operator's decision (it lets anyone submit the domain to the browsers' lists).
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS.append("security.W021")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",  # login lockouts (mnistsite.lockout)
    "classifier",
    "training",
    "dashboard",
    "django_celery_beat",  # beat's schedule in the database (mnistsite.beat)
    "mnistsite.apps.MnistsiteConfig",  # system checks of the layout, the beat schedule's seed, Sentry
]

MIDDLEWARE = [
    "mnistsite.middleware.RequestIdMiddleware",  # X-Request-ID on every response and log line
    "mnistsite.middleware.OperationsMiddleware",  # /healthz, /readyz, /metrics before host checks and sessions
    "django.middleware.security.SecurityMiddleware",
    "mnistsite.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # a locked-out sign-in answered 429 (mnistsite.lockout); last, as axes asks
]

ROOT_URLCONF = "mnistsite.urls"
LOGIN_URL = "account-login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],  # the site's base template and shared includes
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mnistsite.wsgi.application"
ASGI_APPLICATION = "mnistsite.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Persistent connections: opening one per request costs more than a whole prediction.
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "600")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and one writer work concurrently instead of "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests use a file, not an in-memory database, so that the Celery worker processes started by the
    # integration tests see the same database; one file per test process.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("TEST_DATABASE_NAME")
        or str(Path(tempfile.gettempdir()) / f"mnistsite-test-{os.getpid()}.sqlite3")
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Media (drawings, checkpoints, exports) go through Django's storage API. MEDIA_STORAGE=local (the default):
# MEDIA_ROOT on this machine's disk. MEDIA_STORAGE=s3: an S3-compatible bucket that every machine shares
# (django-storages); nothing another machine needs is then kept on a local disk.
MEDIA_STORAGE = os.environ.get("MEDIA_STORAGE", "local").strip().lower() or "local"
if MEDIA_STORAGE not in {"local", "s3"}:
    raise ImproperlyConfigured(f"MEDIA_STORAGE must be local or s3, got {MEDIA_STORAGE!r}")
_MEDIA_BACKEND: dict = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
if MEDIA_STORAGE == "s3":
    if not os.environ.get("MEDIA_S3_BUCKET"):
        raise ImproperlyConfigured("MEDIA_STORAGE=s3 needs MEDIA_S3_BUCKET (and usually MEDIA_S3_ENDPOINT_URL, "
                                   "MEDIA_S3_REGION, MEDIA_S3_ACCESS_KEY_ID, MEDIA_S3_SECRET_ACCESS_KEY)")
    _MEDIA_BACKEND = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["MEDIA_S3_BUCKET"],
            "location": os.environ.get("MEDIA_S3_PREFIX", ""),
            "endpoint_url": os.environ.get("MEDIA_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("MEDIA_S3_REGION") or None,
            # Empty: boto3's own chain (AWS_* variables, instance roles) supplies the credentials.
            "access_key": os.environ.get("MEDIA_S3_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("MEDIA_S3_SECRET_ACCESS_KEY") or None,
            "default_acl": None,  # private objects; staff download through the site
            "querystring_auth": True,
            "file_overwrite": False,  # a name in use gets a new one: nothing stored is ever replaced
        },
    }
STORAGES = {
    "default": _MEDIA_BACKEND,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Where a process keeps the checkpoints it read from object storage, by sha256 (a cache: safe to delete).
CHECKPOINT_CACHE_DIR = Path(os.environ.get("CHECKPOINT_CACHE_DIR")
                            or Path(tempfile.gettempdir()) / "mnistsite-checkpoint-cache")
# Serve files from the apps' static folders without collectstatic while DEBUG is on.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]  # the site's own CSS, favicon and API script
MEDIA_URL = "media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
# Media are private (drawings, checkpoints): MEDIA_URL is answered by mnistsite.media, to staff only, in
# every layout. With nginx in front set MEDIA_ACCEL_REDIRECT to its `internal` location (deploy/nginx.conf,
# e.g. /internal-media/): the site then answers X-Accel-Redirect and nginx sends the file from MEDIA_ROOT.
# Empty (the default): the site streams the file from storage itself.
MEDIA_ACCEL_REDIRECT = os.environ.get("MEDIA_ACCEL_REDIRECT", "").strip()
if MEDIA_ACCEL_REDIRECT and not (MEDIA_ACCEL_REDIRECT.startswith("/") and MEDIA_ACCEL_REDIRECT.endswith("/")):
    raise ImproperlyConfigured(f"MEDIA_ACCEL_REDIRECT must start and end with '/', e.g. /internal-media/, "
                               f"got {MEDIA_ACCEL_REDIRECT!r}")
if MEDIA_ACCEL_REDIRECT and MEDIA_STORAGE != "local":
    raise ImproperlyConfigured("MEDIA_ACCEL_REDIRECT has nginx send files from MEDIA_ROOT's disk; with "
                               f"MEDIA_STORAGE={MEDIA_STORAGE} leave it unset (the site streams from the bucket)")
if "SERVE_MEDIA" in os.environ:
    raise ImproperlyConfigured("SERVE_MEDIA is gone: media are served to staff only, by the site, in every layout "
                               "(MEDIA_ACCEL_REDIRECT hands the sending to nginx; docs/operations/production.md)")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Where the MNIST IDX files live: $MNIST_ROOT/MNIST/raw/*.gz (torchvision's raw layout).
# `python manage.py fetch_mnist` downloads them there.
MNIST_ROOT = Path(os.environ.get("MNIST_ROOT", MEDIA_ROOT / "datasets")).resolve()
# A machine without MNIST under MNIST_ROOT copies it from the media storage (datasets/MNIST/raw/, checked by
# md5 and sha256) before training or evaluating; with MNIST_DOWNLOAD=true it may also download it from the
# mirrors `fetch_mnist` uses. Otherwise a run that needs MNIST fails with the fix in its message.
MNIST_DOWNLOAD = env_bool("MNIST_DOWNLOAD", False)
# Where that download looks, in order (default: the mirrors fetch_mnist uses).
MNIST_MIRRORS = env_list("MNIST_MIRRORS", [])

# Trained checkpoints shipped with the code, one per architecture.
SHIPPED_CHECKPOINTS_DIR = BASE_DIR / "training" / "shipped"

# ---------------------------------------------------------------- predictions and serving
def _throttle_rate(value: str) -> str | None:
    value = value.strip().lower()
    if value in {"", "off", "none", "0"}:
        return None
    return value


PREDICT_THROTTLE = _throttle_rate(os.environ.get("PREDICT_THROTTLE", "120/min"))
PREDICT_MAX_IMAGE_BYTES = int(os.environ.get("PREDICT_MAX_IMAGE_BYTES", 2 * 1024 * 1024))
PREDICT_MAX_IMAGE_PIXELS = int(os.environ.get("PREDICT_MAX_IMAGE_PIXELS", 4_000_000))
PREDICT_BATCH_MAX = int(os.environ.get("PREDICT_BATCH_MAX", 32))
# How often each server process re-reads which model version is active (hot switch).
MODEL_REFRESH_SECONDS = float(os.environ.get("MODEL_REFRESH_SECONDS", 0.5))
# The counts of the public /api/model-status/ are re-read at most this often per process (seconds).
MODEL_STATUS_COUNTS_SECONDS = float(os.environ.get("MODEL_STATUS_COUNTS_SECONDS", 10))
# After a checkpoint fails to load, wait this long before trying it again.
MODEL_RETRY_SECONDS = float(os.environ.get("MODEL_RETRY_SECONDS", 10))
# torch threads per server process (1 suits many processes serving single drawings).
INFERENCE_THREADS = int(os.environ.get("INFERENCE_THREADS", 1))
# A request body may hold one image at the byte limit (base64 adds a third) or a batch of smaller ones.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", PREDICT_MAX_IMAGE_BYTES * 4 // 3 + 65536))

REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A cache that is down must not hold requests up: fail fast (throttles then fail open).
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
        if REDIS_URL and env_bool("CACHE_USE_REDIS", True)
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "mnistsite"}
    )
}

# The proxies whose X-Forwarded-For is believed: addresses or networks, e.g. TRUSTED_PROXIES=127.0.0.1
# behind the nginx of deploy/nginx.conf. Unset (clients connect directly): the header is ignored and
# the client is the socket's peer. Every throttle, lockout and socket cap counts clients by this rule
# (mnistsite.clients; docs/operations/clients-and-limits.md).
TRUSTED_PROXIES = parse_trusted_proxies(os.environ.get("TRUSTED_PROXIES", ""))

# Sign-in lockouts (django-axes; mnistsite.lockout): failures are counted per username and client, per
# username and per client, each with its limit (0 turns the per-client one off); a lock lasts
# LOGIN_LOCKOUT_MINUTES and is refused before any password is hashed. Staff unlock: `manage.py axes_reset`.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env_bool("LOGIN_LOCKOUT_ENABLED", True)
LOGIN_LOCKOUT_FAILURES = int(os.environ.get("LOGIN_LOCKOUT_FAILURES", 5))
LOGIN_LOCKOUT_FAILURES_PER_USERNAME = int(os.environ.get("LOGIN_LOCKOUT_FAILURES_PER_USERNAME", 20))
LOGIN_LOCKOUT_FAILURES_PER_CLIENT = int(os.environ.get("LOGIN_LOCKOUT_FAILURES_PER_CLIENT", 50))
LOGIN_LOCKOUT_MINUTES = float(os.environ.get("LOGIN_LOCKOUT_MINUTES", 15))
if LOGIN_LOCKOUT_FAILURES < 1 or LOGIN_LOCKOUT_FAILURES_PER_USERNAME < 1 or LOGIN_LOCKOUT_MINUTES <= 0:
    raise ImproperlyConfigured("LOGIN_LOCKOUT_FAILURES and LOGIN_LOCKOUT_FAILURES_PER_USERNAME must be at least 1 "
                               "and LOGIN_LOCKOUT_MINUTES above 0 (set LOGIN_LOCKOUT_ENABLED=false to turn lockouts off)")
AXES_HANDLER = "mnistsite.lockout.LockoutHandler"
AXES_FAILURE_LIMIT = LOGIN_LOCKOUT_FAILURES
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "username"] + (
    ["ip_address"] if LOGIN_LOCKOUT_FAILURES_PER_CLIENT else [])
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lock ends LOGIN_LOCKOUT_MINUTES after it began
AXES_CLIENT_IP_CALLABLE = "mnistsite.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "mnistsite.lockout.lockout_response"
AXES_VERBOSE = False  # a line per failure is enough (axes' own warnings); no banner at start

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated API call then gets 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_PARSER_CLASSES": ["mnistsite.parsers.JSONParser"],
    # Throttles count clients by mnistsite.clients (TRUSTED_PROXIES below), not by NUM_PROXIES.
    "DEFAULT_THROTTLE_CLASSES": ["mnistsite.throttling.FailOpenScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"predict": PREDICT_THROTTLE,
                               "token": _throttle_rate(os.environ.get("TOKEN_THROTTLE", "10/min"))},
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "mnistsite.errors.api_exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "mnistsite API",
    "DESCRIPTION": "Handwritten-digit recognition, model registry and training.",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",  # served by the site, no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # drf-spectacular's own hook, then: lists' filters and page take an empty value as absent.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "mnistsite.schema.blank_query_values_allowed"],
    # Two models have a "status" with choices of their own: each enum gets its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ModelVersionStatusEnum": "classifier.models.ModelVersion.Status",
        "TrainingRunStatusEnum": "training.models.TrainingRun.Status",
    },
}

# Across processes (workers publishing training progress to web processes) the channel layer is Redis;
# the in-memory layer only works inside one process, which is the single-process default.
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "mnistsite.channel_layers.PooledRedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL}],
                "max_connections": int(os.environ.get("CHANNEL_LAYER_MAX_CONNECTIONS", 50)),
            },
        }
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# Dashboard sockets one server process holds at most; one more is accepted and closed at once with
# code 4013 ("try again later") and an error message, so a client (or a balancer) goes elsewhere.
DASHBOARD_MAX_SOCKETS = int(os.environ.get("DASHBOARD_MAX_SOCKETS", 2000))
# ... and one client (mnistsite.clients) at most this many (0: no per-client limit). Staff's sockets are
# refused by neither limit. Both are per server process.
DASHBOARD_MAX_SOCKETS_PER_CLIENT = int(os.environ.get("DASHBOARD_MAX_SOCKETS_PER_CLIENT", 20))

# ---------------------------------------------------------------- training runs and workers
# Celery is used when a broker is configured (default: REDIS_URL); otherwise runs execute in a
# background thread of the server process, so retraining works with no other service.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
TRAINING_EXECUTOR = os.environ.get("TRAINING_EXECUTOR") or ("celery" if CELERY_BROKER_URL else "thread")
if TRAINING_EXECUTOR not in {"celery", "thread", "inline"}:
    raise ImproperlyConfigured(f"TRAINING_EXECUTOR must be celery, thread or inline, got {TRAINING_EXECUTOR!r}")
if TRAINING_EXECUTOR == "celery" and not CELERY_BROKER_URL:
    raise ImproperlyConfigured("TRAINING_EXECUTOR=celery needs CELERY_BROKER_URL or REDIS_URL")
# Queues: every worker takes TRAINING_QUEUE; runs that ask for device "cuda" go to TRAINING_GPU_QUEUE,
# which only workers on machines with a GPU take (python manage.py worker --gpu).
TRAINING_QUEUE = os.environ.get("TRAINING_QUEUE", "training")
TRAINING_GPU_QUEUE = os.environ.get("TRAINING_GPU_QUEUE", "training-gpu")
# A user's run is refused (409 too_many_runs) while they have TRAINING_MAX_QUEUED_PER_USER runs queued
# or running, or while TRAINING_MAX_QUEUED runs are (anyone's); 0 turns a limit off. The retraining
# policy's own run (one at a time) is never refused, but counts in the total.
TRAINING_MAX_QUEUED_PER_USER = int(os.environ.get("TRAINING_MAX_QUEUED_PER_USER", 2))
TRAINING_MAX_QUEUED = int(os.environ.get("TRAINING_MAX_QUEUED", 8))
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = TRAINING_QUEUE
CELERY_TASK_ACKS_LATE = False  # a run whose worker dies is failed by the reaper, not silently re-run
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 5}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
# torch threads a run trains with, set in the thread that trains it (a Celery worker's, or the thread
# executor's beside the server's request threads, which keep INFERENCE_THREADS). 0: every core this
# process may run on.
TRAINING_TORCH_THREADS = int(os.environ.get("TRAINING_TORCH_THREADS", 0)) or (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
# A running run writes a heartbeat this often; one silent for TRAINING_HEARTBEAT_TIMEOUT seconds is
# marked failed by the reaper (web requests listing runs, every worker, `manage.py reap_runs`).
TRAINING_HEARTBEAT_SECONDS = float(os.environ.get("TRAINING_HEARTBEAT_SECONDS", 5))
TRAINING_HEARTBEAT_TIMEOUT = float(os.environ.get("TRAINING_HEARTBEAT_TIMEOUT", 45))
TRAINING_REAP_SECONDS = float(os.environ.get("TRAINING_REAP_SECONDS", 10))
# Progress: the run's row is written at most this often (and at every epoch and status change);
# batch events are published at most this often per run.
TRAINING_PROGRESS_WRITE_SECONDS = float(os.environ.get("TRAINING_PROGRESS_WRITE_SECONDS", 1.0))
TRAINING_PROGRESS_EVENT_SECONDS = float(os.environ.get("TRAINING_PROGRESS_EVENT_SECONDS", 0.25))
# How often a running run looks at its cancel flag in the database (the engine checks it every batch).
TRAINING_CANCEL_POLL_SECONDS = float(os.environ.get("TRAINING_CANCEL_POLL_SECONDS", 0.2))
# The field set: this share of labelled drawings (chosen by a hash of the prediction id) is held out
# of training and used only to evaluate versions.
TRAINING_FIELD_SET_PERCENT = int(os.environ.get("TRAINING_FIELD_SET_PERCENT", 20))
# Labels and trust (docs/trust.md). Each drawing's effective label is "trusted" (staff, the review queue,
# an account holding classifier.trusted_labeller), "agreed" (LABELS_AGREEMENT_CLIENTS distinct clients,
# none disagreeing) or "visitor" (one visitor's word). LABELS_TRAIN_TRUST: the least trusted label that
# trains and counts toward the retraining policy ("trusted", "agreed", or "visitor" for a small private
# site); LABELS_EVIDENCE_TRUST: the least trusted label in the field set and the shadow evidence the gate
# reads ("trusted" or "agreed"). After changing LABELS_AGREEMENT_CLIENTS: `manage.py recompute_labels`.
if "LABELS_VISITOR_AGREEMENT" in os.environ:
    raise ImproperlyConfigured(
        "LABELS_VISITOR_AGREEMENT is gone: labels are trusted by source now. Use LABELS_TRAIN_TRUST "
        "(trusted, agreed, visitor), LABELS_EVIDENCE_TRUST (trusted, agreed) and LABELS_AGREEMENT_CLIENTS "
        "(see docs/trust.md)")
LABELS_TRAIN_TRUST = os.environ.get("LABELS_TRAIN_TRUST", "trusted")
if LABELS_TRAIN_TRUST not in {"trusted", "agreed", "visitor"}:
    raise ImproperlyConfigured("LABELS_TRAIN_TRUST must be one of: trusted, agreed, visitor")
LABELS_EVIDENCE_TRUST = os.environ.get("LABELS_EVIDENCE_TRUST", "trusted")
if LABELS_EVIDENCE_TRUST not in {"trusted", "agreed"}:
    raise ImproperlyConfigured("LABELS_EVIDENCE_TRUST must be one of: trusted, agreed")
LABELS_AGREEMENT_CLIENTS = int(os.environ.get("LABELS_AGREEMENT_CLIENTS", 2))
if LABELS_AGREEMENT_CLIENTS < 2:
    raise ImproperlyConfigured("LABELS_AGREEMENT_CLIENTS must be 2 or more: one client never agrees with itself")
# The review queue asks the active version and the newest candidate for their answers on this many
# drawings at its head (in memory, nothing stored) and moves those they disagree on forward.
REVIEW_OPINION_WINDOW = int(os.environ.get("REVIEW_OPINION_WINDOW", 32))
# Promotion gate margins: how much accuracy (0..1) a candidate may lose against the active version on a set
# and still pass the gate's "at least as accurate, minus the margin" test (classifier/promotion.py).
# PROMOTION_MARGIN_MNIST is the forgetting budget, 0.001 = 0.1 percentage point (10 of the 10,000 MNIST test
# images). MNIST only guards against forgetting: users' drawings are what the site is for, and without a
# budget an honest fine-tune that loses a handful of MNIST test images is refused whatever users' drawings
# say (docs/training.md, docs/trust.md). Losing more than the budget, significantly (McNemar), is refused
# even when users' drawings gain.
# PROMOTION_MARGIN_FIELD (the field set and the shadow evidence, users' own drawings): 0, no loss allowed.
# Both must lie in [0, 0.05].
def _promotion_margin(name: str, raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw and raw.strip() else default
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number between 0 and 0.05 (accuracy 0..1), got {raw!r}") from None
    if not 0.0 <= value <= 0.05:
        raise ImproperlyConfigured(f"{name} must be between 0 and 0.05 (accuracy 0..1, 0.001 = 0.1 percentage "
                                   f"point), got {raw!r}")
    return value


PROMOTION_MARGIN_MNIST = _promotion_margin("PROMOTION_MARGIN_MNIST", os.environ.get("PROMOTION_MARGIN_MNIST"), 0.001)
PROMOTION_MARGIN_FIELD = _promotion_margin("PROMOTION_MARGIN_FIELD", os.environ.get("PROMOTION_MARGIN_FIELD"), 0.0)
# Significance level of the gate's paired (McNemar) test on each evidence set.
PROMOTION_ALPHA = float(os.environ.get("PROMOTION_ALPHA", 0.05))
if not 0.0 < PROMOTION_ALPHA < 1.0:
    raise ImproperlyConfigured("PROMOTION_ALPHA must be between 0 and 1, e.g. 0.05")
# Automatic retraining (training.policy): once RETRAIN_POLICY_MIN_LABELS drawings got a usable label since
# the last automatic run, fine-tune the active version (the fine-tune recipe, RETRAIN_POLICY_RUN_OPTIONS
# over it: a JSON object of retrain options); its result enters shadow, and once it answered
# RETRAIN_POLICY_SHADOW_MIN_LABELS drawings that were then labelled, the gate decides. Staff change both
# thresholds and pause the policy in the admin (the values here are the defaults of the policy's row).
# The check runs every RETRAIN_POLICY_INTERVAL_SECONDS: from Celery beat (`make beat`) where runs go to
# Celery workers, else in a thread of each serving process (RETRAIN_POLICY_SCHEDULER: beat, thread, off).
RETRAIN_POLICY_ENABLED = env_bool("RETRAIN_POLICY_ENABLED", True)
RETRAIN_POLICY_MIN_LABELS = int(os.environ.get("RETRAIN_POLICY_MIN_LABELS", 200))
RETRAIN_POLICY_SHADOW_MIN_LABELS = int(os.environ.get("RETRAIN_POLICY_SHADOW_MIN_LABELS", 100))
RETRAIN_POLICY_INTERVAL_SECONDS = float(os.environ.get("RETRAIN_POLICY_INTERVAL_SECONDS", 60))
RETRAIN_POLICY_SCHEDULER = os.environ.get("RETRAIN_POLICY_SCHEDULER") or (
    "beat" if TRAINING_EXECUTOR == "celery" else "thread")
if RETRAIN_POLICY_SCHEDULER not in {"beat", "thread", "off"}:
    raise ImproperlyConfigured(f"RETRAIN_POLICY_SCHEDULER must be beat, thread or off, got {RETRAIN_POLICY_SCHEDULER!r}")
try:
    RETRAIN_POLICY_RUN_OPTIONS = json.loads(os.environ.get("RETRAIN_POLICY_RUN_OPTIONS") or "{}")
except ValueError as exc:
    raise ImproperlyConfigured(f"RETRAIN_POLICY_RUN_OPTIONS must be a JSON object: {exc}") from None
if not isinstance(RETRAIN_POLICY_RUN_OPTIONS, dict):
    raise ImproperlyConfigured("RETRAIN_POLICY_RUN_OPTIONS must be a JSON object, e.g. {\"epochs\": 1}")
# Celery beat sends the policy's check to the training queue; a check not taken within one interval
# (the worker was training) expires: the next one comes anyway.
# The schedule lives in the database (django-celery-beat): `migrate` seeds the "retrain-policy" periodic task
# from RETRAIN_POLICY_INTERVAL_SECONDS when it is missing; staff change it in the admin. The scheduler sends
# it once per interval however many beats run (mnistsite.beat); nothing is scheduled from the settings.
CELERY_IMPORTS = ("training.policy_schedule",)
CELERY_BEAT_SCHEDULER = "mnistsite.beat.PolicyBeatScheduler"
CELERY_BEAT_SCHEDULE: dict = {}
# Shadow evaluation (classifier.shadow): when > 0, the gate refuses a candidate in shadow until its
# shadow answers cover this many labelled drawings, and any loss on them (significantly worse, or below
# the active version's accuracy minus PROMOTION_MARGIN_FIELD). 0: shadow traffic is evidence, not required.
PROMOTION_SHADOW_MIN_LABELLED = int(os.environ.get("PROMOTION_SHADOW_MIN_LABELLED", 0))
# Where the candidates in shadow answer (classifier.shadow): "process", a process of its own
# (`python manage.py shadow`, at the kernel's idle CPU priority) that reads stored predictions, the
# default with a broker (the production layout); "thread", a thread in each server process, the default
# otherwise (the one-process run).
SHADOW_WORKER = os.environ.get("SHADOW_WORKER") or ("process" if CELERY_BROKER_URL else "thread")
if SHADOW_WORKER not in {"process", "thread"}:
    raise ImproperlyConfigured(f"SHADOW_WORKER must be process or thread, got {SHADOW_WORKER!r}")
# The shadow process looks for new predictions this often (seconds), taking at most SHADOW_BATCH_MAX
# of the newest each time.
SHADOW_POLL_SECONDS = float(os.environ.get("SHADOW_POLL_SECONDS", 1.0))
# ... and skips a look while the machine's CPUs were busier than this share (0..1) since the last one,
# not counting its own work (1: never skips): under heavy traffic the requests get the CPUs.
SHADOW_MAX_BUSY = float(os.environ.get("SHADOW_MAX_BUSY", 0.8))
# Thread mode: drawings waiting for the shadowed candidates, per server process: when full, new ones are dropped
# (and counted), never waited for. The worker waits SHADOW_LINGER_SECONDS after a drawing arrives, then
# takes what is queued, up to SHADOW_BATCH_MAX at a time: fewer, larger batches when traffic is heavy.
SHADOW_QUEUE_SIZE = int(os.environ.get("SHADOW_QUEUE_SIZE", 256))
SHADOW_BATCH_MAX = int(os.environ.get("SHADOW_BATCH_MAX", 64))
SHADOW_LINGER_SECONDS = float(os.environ.get("SHADOW_LINGER_SECONDS", 0.1))
# The shadow's CPU budget: at most this share of one core (per server process for the thread, for the
# shadow process as a whole); it rests after each batch, so under heavy traffic it answers a sample.
SHADOW_CPU_SHARE = float(os.environ.get("SHADOW_CPU_SHARE", 0.03))
# The shadow worker thread's niceness (Linux: per thread), so request threads come first on a busy CPU.
SHADOW_NICE = int(os.environ.get("SHADOW_NICE", 10))
# Once a process's shadow worker starts, Python's thread switch interval (seconds) is lowered to this,
# so a request waits at most this long for the GIL while the worker runs Python code (0: leave it).
SHADOW_SWITCH_INTERVAL = float(os.environ.get("SHADOW_SWITCH_INTERVAL", 0.0005))
# Quality over time (stats page): warn when accuracy on a version's last QUALITY_WINDOW labelled
# drawings is below its field-set accuracy by more than QUALITY_WARNING_MARGIN (accuracy, 0..1).
QUALITY_WINDOW = int(os.environ.get("QUALITY_WINDOW", 200))
QUALITY_WARNING_MARGIN = float(os.environ.get("QUALITY_WARNING_MARGIN", 0.02))
# The stats page's accuracy per N labelled drawings: each point is a version's next QUALITY_BUCKET of them.
QUALITY_BUCKET = int(os.environ.get("QUALITY_BUCKET", 100))
if QUALITY_BUCKET < 1:
    raise ImproperlyConfigured("QUALITY_BUCKET must be at least 1, e.g. 100")
# The admin's "Import drawings" form refuses a dataset zip larger than this (bytes, as uploaded); the
# import_drawings command reads files of any size.
DRAWINGS_IMPORT_MAX_BYTES = int(os.environ.get("DRAWINGS_IMPORT_MAX_BYTES", 200 * 1024 * 1024))
# Any import (admin or command) refuses a zip member that unpacks to more than this (bytes): the
# inputs of a million drawings are 784 MB.
DRAWINGS_IMPORT_MAX_MEMBER_BYTES = int(os.environ.get("DRAWINGS_IMPORT_MAX_MEMBER_BYTES", 1024 ** 3))
# Any import refuses a dataset of more drawings than this, read from the images file's header before
# anything else; it bounds the labels, the manifest (one row per image) and the import's memory.
DRAWINGS_IMPORT_MAX_ROWS = int(os.environ.get("DRAWINGS_IMPORT_MAX_ROWS", 200_000))
# The admin's "Upload a checkpoint" form refuses a larger file (bytes); a run's largest network
# (engine.nets.MAX_PARAMETERS, 20 M parameters) is 80 MB.
CHECKPOINT_UPLOAD_MAX_BYTES = int(os.environ.get("CHECKPOINT_UPLOAD_MAX_BYTES", 200 * 1024 * 1024))

# ---------------------------------------------------------------- operations (docs/operations/running.md)
# SITE_LAYOUT=multi says the site runs on several machines: the system check mnistsite.E001 then refuses
# settings that only work on one (no REDIS_URL, SQLite, thread executor). Unset, with DEBUG off and
# one-process fallbacks, mnistsite.W001 warns; SITE_LAYOUT=single says one process is intended (no warning).
SITE_LAYOUT = os.environ.get("SITE_LAYOUT", "")
if SITE_LAYOUT not in {"", "single", "multi"}:
    raise ImproperlyConfigured(f"SITE_LAYOUT must be single or multi, got {SITE_LAYOUT!r}")
# /metrics (Prometheus text) answers a request with "Authorization: Bearer $METRICS_TOKEN" or one from an
# address in METRICS_ALLOWED_NETWORKS (comma-separated, e.g. 10.0.0.0/8,127.0.0.1/32); with neither set it is 404.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
# /readyz gives up on each backing service after this many seconds.
READYZ_TIMEOUT_SECONDS = float(os.environ.get("READYZ_TIMEOUT_SECONDS", 1.0))
# Errors to Sentry only when SENTRY_DSN is set (sentry_sdk is not initialised otherwise).
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = os.environ.get("SENTRY_ENVIRONMENT", "")
SENTRY_TRACES_SAMPLE_RATE = float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE", 0.0))
# LOG_FORMAT=json: one JSON object per line with request_id, run_id and version_id (mnistsite.logs).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = logging_config(log_format=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))
# Django's own console handler on "django" (DEBUG only) would print each of its records a second time
# next to the root's: "django" (django.request's 4xx/5xx, ...) only propagates to the root.
LOGGING["loggers"] = {"django": {"handlers": [], "level": os.environ.get("LOG_LEVEL", "INFO"), "propagate": True}}
# django-axes writes three INFO lines per failed sign-in; its warnings (each failure, each lockout) are enough.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}
