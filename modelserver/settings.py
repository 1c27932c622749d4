"""Settings for the model server, every one read from the environment (see `.env.example`)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEV_SECRET_KEY = "django-insecure-dev-key-for-local-use-only"

# Off unless asked for: `make run` and the tests turn it on.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or DEV_SECRET_KEY
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    # One line on stderr and exit status 1, not a traceback from deep inside Django's start.
    raise SystemExit("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false.")
# With debug off, `/metrics` answers only `Authorization: Bearer <METRICS_TOKEN>`; unset: off.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_guid",
    "django_tasks",
    "django_tasks_db",
    # Swagger UI's files as static files, for /api/docs without a CDN.
    "drf_spectacular_sidecar",
    "predictions",
]

MIDDLEWARE = [
    "django_guid.middleware.guid_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "modelserver.urls"
ASGI_APPLICATION = "modelserver.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # `make run`: daphne and the worker share one SQLite file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: Redis when configured (needed for more than one process), in-memory otherwise.
REDIS_URL = env.str("REDIS_URL", default="")


def redis_host(url: str) -> dict:
    """channels_redis's host entry; Heroku Redis (`rediss://`) has a self-signed certificate."""
    if url.startswith("rediss://"):
        return {"address": url, "ssl_cert_reqs": None}
    return {"address": url}


if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "predictions.channel_layer.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [redis_host(REDIS_URL)]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Model files: S3 (or an S3-compatible server) when a bucket is named, a local folder otherwise.
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
MODEL_STORAGE_DIR = env.path("MODEL_STORAGE_DIR", default=BASE_DIR / "var" / "models")
if AWS_STORAGE_BUCKET_NAME:
    # django-storages reads the AWS_* settings below; unset ones fall back to boto3's usual chain.
    AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None
    AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="") or None
    AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None
    AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
    AWS_S3_FILE_OVERWRITE = False
    # Downloads spill to a temporary file past 1 MiB instead of holding a whole model in memory
    # (django-storages' default keeps it all in RAM, which the process then keeps).
    AWS_S3_MAX_MEMORY_SIZE = 1024 * 1024
    AWS_DEFAULT_ACL = None
    MODEL_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage"}
else:
    MODEL_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MODEL_STORAGE_DIR)},
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "models": MODEL_STORAGE,
}

# Registration jobs (checking a new version's file) run in the worker process (`run_worker`),
# queued in the database by django-tasks-db. A job renews a lease on its version while it
# runs; one whose lease lapses (its worker died) is taken up again, at most
# REGISTRATION_MAX_ATTEMPTS times in all, then failed with the reason.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
REGISTRATION_LEASE_SECONDS = env.float("REGISTRATION_LEASE_SECONDS", default=60.0)
REGISTRATION_MAX_ATTEMPTS = env.int("REGISTRATION_MAX_ATTEMPTS", default=2)
WORKER_POLL_SECONDS = env.float("WORKER_POLL_SECONDS", default=1.0)
# Without Redis each process has its own channel layer: web processes then watch the database
# for activations (made by the worker, say) every this many seconds.
MODEL_SWAP_POLL_SECONDS = env.float("MODEL_SWAP_POLL_SECONDS", default=2.0)

# Downloaded model files, keyed by their sha256; safe to delete while the server is stopped.
MODEL_CACHE_DIR = env.path("MODEL_CACHE_DIR", default=BASE_DIR / "var" / "model-cache")
# Validating and compiling a new version runs in a child process with this time limit (seconds).
MODEL_CHECK_TIMEOUT = env.int("MODEL_CHECK_TIMEOUT", default=300)
# ResNet50's check peaks near 1.5 GiB of data memory (`make bench`); 2 GiB fits a
# performance-M worker dyno (2.5 GB) with room for the worker itself.
MODEL_CHECK_MEMORY_BYTES = env.int("MODEL_CHECK_MEMORY_BYTES", default=2 * 1024**3)
# A `.keras` archive that unpacks to more than this is refused before anything reads it.
MODEL_MAX_UNPACKED_BYTES = env.int("MODEL_MAX_UNPACKED_BYTES", default=1024**3)
# Every server process (daphne, the worker, manage.py) makes itself not dumpable at start
# (`predictions.apps`): no core dumps, and no process of the same user, a model check's child
# among them, may read its /proc/<pid>/environ or memory or ptrace it. True lets profilers
# and debuggers (py-spy, gdb) attach as that user.
PROCESS_DUMPABLE = env.bool("PROCESS_DUMPABLE", default=False)
# Loaded models per process: least recently used ones are unloaded past this many bytes of
# model artifacts (a LiteRT model's resident memory is close to its file size).
MODEL_CACHE_BYTES = env.int("MODEL_CACHE_BYTES", default=200 * 1024 * 1024)

# Inference: decoding and preprocessing in a dedicated thread pool; each loaded model runs
# batches gathered across connections (up to MAX_BATCH_SIZE frames, waiting at most
# MAX_BATCH_WAIT_MS after the first) with LITERT_THREADS interpreter threads.
INFERENCE_THREADS = env.int("INFERENCE_THREADS", default=2)
MAX_BATCH_SIZE = env.int("MAX_BATCH_SIZE", default=4)
MAX_BATCH_WAIT_MS = env.float("MAX_BATCH_WAIT_MS", default=0.0)
LITERT_THREADS = env.int("LITERT_THREADS", default=2)
MAX_PENDING_FRAMES = env.int("MAX_PENDING_FRAMES", default=8)
# Per connection, on average (bursts of two seconds' worth pass); 0 turns the limit off.
MAX_FRAMES_PER_SECOND = env.float("MAX_FRAMES_PER_SECOND", default=100)
# Process-wide limits: past them a WebSocket closes with 4013, a frame is answered `busy` and an
# HTTP predict 429. Frames queued for the decode pool or in it: 128 a thread is above the 200
# clients with a frame each of `make soak`, and about 1.5 s of work at the rate two threads
# drain it here (~175 frames/s), where 1000 sockets x MAX_PENDING_FRAMES would be 45 s.
INFERENCE_QUEUE_FRAMES = env.int("INFERENCE_QUEUE_FRAMES", default=128 * INFERENCE_THREADS)
# Prepared inputs waiting for each loaded model: eight full batches.
BATCH_QUEUE_FRAMES = env.int("BATCH_QUEUE_FRAMES", default=8 * MAX_BATCH_SIZE)
# An idle WebSocket costs the process about 45 kB (README, "Limits": 1000 are about 45 MB).
MAX_CONNECTIONS = env.int("MAX_CONNECTIONS", default=1000)
MAX_IMAGE_BYTES = env.int("MAX_IMAGE_BYTES", default=8 * 1024 * 1024)
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=25_000_000)
# Bytes of images being decoded and preprocessed at once in the process (frames wait in the pool
# for room; one that alone would take more is `too_large`). 128 MiB admits the costliest image
# the default limits allow a PNG (25 MP RGBA, 95 MiB decoded) and keeps a burst of them under
# 150 MB of the process's memory (README, "Hostile input").
DECODE_BUDGET_BYTES = env.int("DECODE_BUDGET_BYTES", default=128 * 1024 * 1024)
# A bare echo WebSocket at /ws/echo/, the floor of the transport for `make bench`.
ECHO_WEBSOCKET = env.bool("ECHO_WEBSOCKET", default=False)
# Feedback (images with the label someone gave them): stored examples a project may hold, and
# feedback requests a minute from one client address over HTTP (429 `busy` beyond) or from one
# WebSocket connection (`busy` beyond).
FEEDBACK_MAX_EXAMPLES_PER_PROJECT = env.int("FEEDBACK_MAX_EXAMPLES_PER_PROJECT", default=10_000)
FEEDBACK_PER_MINUTE = env.int("FEEDBACK_PER_MINUTE", default=30)
# The image frames a WebSocket keeps for feedback (its last 32 answered ones): bytes per
# connection, and across the process's connections (the oldest frames go first past either).
FEEDBACK_FRAMES_PER_CONNECTION_BYTES = env.int(
    "FEEDBACK_FRAMES_PER_CONNECTION_BYTES", default=8 * 1024 * 1024
)
FEEDBACK_FRAMES_BUDGET_BYTES = env.int("FEEDBACK_FRAMES_BUDGET_BYTES", default=64 * 1024 * 1024)
# A new version is scored on the project's latest stored examples (at most this many) beside the
# version in service, once its check passes; with fewer than the minimum it is not scored.
FEEDBACK_SCORE_MAX_EXAMPLES = env.int("FEEDBACK_SCORE_MAX_EXAMPLES", default=500)
FEEDBACK_SCORE_MIN_EXAMPLES = env.int("FEEDBACK_SCORE_MIN_EXAMPLES", default=20)
# A version's int8 and float16 variants may be served only when their top-1 agrees with the
# float artifact's on at least this share of the project's stored examples (as scored above),
# or, with fewer than FEEDBACK_SCORE_MIN_EXAMPLES of them, of VARIANT_PARITY_INPUTS generated
# inputs.
VARIANT_MIN_AGREEMENT = env.float("VARIANT_MIN_AGREEMENT", default=0.99)
VARIANT_PARITY_INPUTS = env.int("VARIANT_PARITY_INPUTS", default=200)
# Usage per project, version and minute (predictions/usage.py): counted in each web process's
# memory and added into the database by a thread every USAGE_FLUSH_SECONDS (and at exit; 0: no
# thread, no flush unless called); rows older than USAGE_KEEP_DAYS are deleted.
USAGE_FLUSH_SECONDS = env.float("USAGE_FLUSH_SECONDS", default=60.0)
USAGE_KEEP_DAYS = env.int("USAGE_KEEP_DAYS", default=30)
# Raw request bodies (HTTP predict) may be an image of up to MAX_IMAGE_BYTES, base64-encoded.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024

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
# Where `collectstatic` puts static files (the Docker build runs it); WhiteNoise serves them.
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
# Serve straight from the app folders too, so pages work with DJANGO_DEBUG=false before collectstatic.
WHITENOISE_USE_FINDERS = True

# Behind Heroku's router TLS ends at the router, which says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    # Production: HTTPS only (health checks and metrics may come over plain HTTP from inside).
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
# Origins (https://host) whose forms may post here besides this site's own, e.g. a custom domain
# in front of another proxy.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Requests are named by Heroku's X-Request-ID (made here when absent), returned in the reply and
# written on every log line.
DJANGO_GUID = {"GUID_HEADER_NAME": "X-Request-ID", "VALIDATE_GUID": False, "RETURN_HEADER": True}

# One line a record, on stdout (stderr under manage.py), where Heroku's log router reads it.
LOG_STREAM = env.str("LOG_STREAM", default="stdout")
if LOG_STREAM not in ("stdout", "stderr"):
    raise ImproperlyConfigured(f"LOG_STREAM must be stdout or stderr, not {LOG_STREAM!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "modelserver.log.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": f"ext://sys.{LOG_STREAM}",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # django-guid says at INFO, on every request, that it made an id.
    "loggers": {"django_guid": {"level": "WARNING"}},
}
