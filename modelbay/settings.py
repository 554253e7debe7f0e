"""Modelbay settings: read from the environment, with embedded defaults.

With nothing set, Modelbay runs on SQLite, a file-based cache, an in-memory channel
layer, a Celery broker on the local filesystem and the ``local`` runtime backend. Set
DATABASE_URL, REDIS_URL, CELERY_BROKER_URL and MODELBAY_RUNTIME_BACKEND for the
production stack (see docker-compose.yml).
"""

import secrets
import sys
from pathlib import Path

import dj_database_url

from modelbay.core.env import env_bool, env_float, env_int, env_list, env_str, parse_zone_tls, parse_zones

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("MODELBAY_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("MODELBAY_SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "allauth",
    "allauth.account",
    "channels",
    "accounts",
    "controlplane",
    "inference",
    "marketplace",
    "console",
    "demo",
]

MIDDLEWARE = [
    "inference.middleware.ApiKeyFastPathMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "modelbay.core.csp.ContentSecurityPolicyMiddleware",  # MODELBAY_CSP below
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.CurrentOrganizationMiddleware",
    "accounts.middleware.VerifiedEmailMiddleware",  # MODELBAY_REQUIRE_VERIFIED_EMAIL below
]

ROOT_URLCONF = "modelbay.urls"
ASGI_APPLICATION = "modelbay.asgi.application"

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
                "console.context_processors.organizations",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and beat share one file: WAL lets readers run beside
    # the writer, IMMEDIATE transactions avoid deadlocks between two writers.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A server that does not answer (a host gone) fails the request in seconds, not minutes:
    # the API answers 503 database_unavailable, and the next request connects again.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Cache, channel layer, Celery ---------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
# The longest a Redis connection or command may take before it counts as Redis being away.
MODELBAY_REDIS_TIMEOUT_S = env_float("MODELBAY_REDIS_TIMEOUT_S", 1.0)
# With Redis away, how stale the gateway's in-process keys, routes and plans may grow: they
# are loaded again from the database at least this often (modelbay.core.generation).
MODELBAY_CACHE_STALE_S = env_float("MODELBAY_CACHE_STALE_S", 30.0)
if REDIS_URL:
    CACHES = {
        "default": {
            # Requests go on without it while Redis is away (modelbay.core.cache).
            "BACKEND": "modelbay.core.cache.FailSoftRedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": MODELBAY_REDIS_TIMEOUT_S,
                "socket_timeout": MODELBAY_REDIS_TIMEOUT_S,
            },
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    # Shared by every process on this host (web workers, Celery), unlike locmem.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The embedded default is a folder (kombu's filesystem transport, see modelbay/broker.py).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "modelbay-fs://localhost/")
if CELERY_BROKER_URL.startswith(("modelbay-fs://", "filesystem://")):
    _broker_dir = DATA_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.2,  # seconds between looks at the queue folder (default 1)
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
MODELBAY_RECONCILE_INTERVAL = env_float("MODELBAY_RECONCILE_INTERVAL", 10.0)
CELERY_BEAT_SCHEDULE = {
    "reconcile-services": {
        "task": "controlplane.tasks.reconcile_all",
        "schedule": MODELBAY_RECONCILE_INTERVAL,
        # Missed runs do not pile up: a run older than its interval is dropped.
        "options": {"expires": MODELBAY_RECONCILE_INTERVAL * 0.9},
    },
    "prune-metrics": {"task": "controlplane.tasks.prune_metrics", "schedule": 3600.0},
    "prune-instance-logs": {"task": "controlplane.tasks.prune_instance_logs", "schedule": 3600.0},
    "prune-storage": {"task": "controlplane.tasks.prune_storage", "schedule": 3600.0},
    # Autoscaled services get a desired replica count from their load this often.
    "autoscale": {
        "task": "controlplane.tasks.autoscale",
        "schedule": env_float("MODELBAY_AUTOSCALE_TICK_S", 1.0),
        "options": {"expires": env_float("MODELBAY_AUTOSCALE_TICK_S", 1.0) * 0.9},
    },
    "prune-usage-batches": {"task": "marketplace.tasks.prune_usage_batches", "schedule": 3600.0},
    # Each service's calls in flight and replicas, for its charts (ServiceSample.INTERVAL_S).
    "record-samples": {"task": "controlplane.tasks.record_samples", "schedule": 10.0, "options": {"expires": 9.0}},
    # Releases step every interval_s; this tick is how late a step may be.
    "advance-releases": {
        "task": "controlplane.tasks.advance_releases",
        "schedule": env_float("MODELBAY_RELEASE_TICK_S", 1.0),
        "options": {"expires": env_float("MODELBAY_RELEASE_TICK_S", 1.0) * 0.9},
    },
}
MODELBAY_METRICS_RETENTION_DAYS = env_int("MODELBAY_METRICS_RETENTION_DAYS", 8)
# The shortest interval_s a release may take: call figures are stored in 10-second rows.
MODELBAY_RELEASE_MIN_INTERVAL_S = env_int("MODELBAY_RELEASE_MIN_INTERVAL_S", 10)
# The autoscaler's stable window (controlplane.autoscaler); its panic window is a tenth of it.
MODELBAY_AUTOSCALE_STABLE_WINDOW_S = env_float("MODELBAY_AUTOSCALE_STABLE_WINDOW_S", 60.0)
# Each web process stores the app calls it billed this often (marketplace.metering).
MODELBAY_USAGE_FLUSH_S = env_float("MODELBAY_USAGE_FLUSH_S", 1.0)
# Each web process reports its calls in flight per service this often (inference.load,
# controlplane.load: what the autoscaler scales on); a report three times as old is ignored.
MODELBAY_LOAD_REPORT_S = env_float("MODELBAY_LOAD_REPORT_S", 1.0)

# --- Auth ------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env_str("MODELBAY_EMAIL_VERIFICATION", "none")
ACCOUNT_LOGOUT_ON_GET = False
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "console:home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# --- Email verification (accounts.verification) ---------------------------------------
# Where mail is really delivered, a person verifies their email address before uploading
# models or creating API keys (403 until then; docs/operations.md). Off by default with the
# backends that deliver nothing (console, locmem, dummy, file: development and tests).
_EMAIL_BACKEND_KIND = EMAIL_BACKEND.rpartition(".")[0].rpartition(".")[2]  # console, smtp, ...
MODELBAY_REQUIRE_VERIFIED_EMAIL = env_bool(
    "MODELBAY_REQUIRE_VERIFIED_EMAIL", _EMAIL_BACKEND_KIND not in {"console", "locmem", "dummy", "filebased"}
)
if MODELBAY_REQUIRE_VERIFIED_EMAIL:
    # Sign-up sends the verification link (unless MODELBAY_EMAIL_VERIFICATION says otherwise).
    ACCOUNT_EMAIL_VERIFICATION = env_str("MODELBAY_EMAIL_VERIFICATION", "optional")

# --- REST API --------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.ConsoleSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasOrganization"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "modelbay.core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelbay API",
    "DESCRIPTION": "Upload models, deploy them as inference services, and call them.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ServiceStatusEnum": "controlplane.choices.ServiceStatus",
        "ServiceNetworkEnum": "controlplane.choices.ServiceNetwork",
        "InstanceStatusEnum": "controlplane.choices.InstanceStatus",
        "ReleaseStatusEnum": "controlplane.choices.ReleaseStatus",
        "AutoscalerModeEnum": "controlplane.choices.AutoscalerMode",
        "ListingStatusEnum": "marketplace.models.ListingStatus",
        "SubscriptionStatusEnum": "marketplace.models.SubscriptionStatus",
    },
}

# --- Static files ---------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("MODELBAY_STATIC_ROOT", str(DATA_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- Modelbay -------------------------------------------------------------------------
MODELBAY_RUNTIME_BACKEND = env_str("MODELBAY_RUNTIME_BACKEND", "local")
MODELBAY_ZONES = parse_zones(env_str("MODELBAY_ZONES", "zone-a,zone-b"))
MODELBAY_ARTIFACT_ROOT = Path(env_str("MODELBAY_ARTIFACT_ROOT", str(DATA_DIR / "artifacts")))
MODELBAY_RUN_DIR = Path(env_str("MODELBAY_RUN_DIR", str(DATA_DIR / "run")))
# The local backend's venvs for python models' requirements, one per set of requirements
# (and environment): a folder several installations on one machine may share.
MODELBAY_VENV_DIR = Path(env_str("MODELBAY_VENV_DIR", str(DATA_DIR / "venvs")))
MODELBAY_MAX_UPLOAD_BYTES = env_int("MODELBAY_MAX_UPLOAD_BYTES", 500 * 1024 * 1024)
# Where an upload waits while it is received (Django's FILE_UPLOAD_TEMP_DIR) and checked.
# By default in the data dir, on the artifacts' file system: storing a checked package is
# then a rename, and a full disk shows while the upload is received (507, nothing kept).
MODELBAY_UPLOAD_TMP_DIR = Path(env_str("MODELBAY_UPLOAD_TMP_DIR", str(DATA_DIR / "uploads")))
MODELBAY_UPLOAD_TMP_DIR.mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_TEMP_DIR = str(MODELBAY_UPLOAD_TMP_DIR)
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "modelbay.core.uploads.TemporaryFileUploadHandler",  # removes a partial file at once
]
MODELBAY_MAX_UNPACKED_BYTES = env_int("MODELBAY_MAX_UNPACKED_BYTES", 2 * 1024 * 1024 * 1024)
MODELBAY_MAX_PREDICT_BYTES = env_int("MODELBAY_MAX_PREDICT_BYTES", 20 * 1024 * 1024)
MODELBAY_MAX_REPLICAS = env_int("MODELBAY_MAX_REPLICAS", 16)
# Calls in flight one replica of an autoscaled service should carry, unless the service sets
# its own target_in_flight.
MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT = env_int("MODELBAY_AUTOSCALE_TARGET_IN_FLIGHT", 4)
# A call's deadline, arrival to answer, unless its service sets timeout_s (up to the maximum).
MODELBAY_PREDICT_TIMEOUT = env_float("MODELBAY_PREDICT_TIMEOUT", 30.0)
MODELBAY_MAX_TIMEOUT_S = env_int("MODELBAY_MAX_TIMEOUT_S", 900)
# The largest answer the gateway takes from a runtime (502 model_error beyond it).
MODELBAY_MAX_RESPONSE_BYTES = env_int("MODELBAY_MAX_RESPONSE_BYTES", 64 * 1024 * 1024)
# Calls a subscriber may have in flight at once to a marketplace app whose plan sets no max_in_flight.
MODELBAY_APP_MAX_IN_FLIGHT = env_int("MODELBAY_APP_MAX_IN_FLIGHT", 8)
# Caps on calls in flight at once (inference.limits), for the whole site: per organization
# (its calls to all its services and apps) and per service. A call beyond a cap waits in a
# queue of at most MODELBAY_IN_FLIGHT_QUEUE calls for at most MODELBAY_IN_FLIGHT_WAIT_S (or its
# deadline), then gets 429 too_many_in_flight. Each of the WEB_CONCURRENCY gateway processes
# holds its share of a cap.
MODELBAY_ORG_MAX_IN_FLIGHT = env_int("MODELBAY_ORG_MAX_IN_FLIGHT", 64)
MODELBAY_SERVICE_MAX_IN_FLIGHT = env_int("MODELBAY_SERVICE_MAX_IN_FLIGHT", 32)
MODELBAY_IN_FLIGHT_QUEUE = env_int("MODELBAY_IN_FLIGHT_QUEUE", 64)
MODELBAY_IN_FLIGHT_WAIT_S = env_float("MODELBAY_IN_FLIGHT_WAIT_S", 10.0)
MODELBAY_GATEWAY_PROCESSES = env_int("WEB_CONCURRENCY", 1)
MODELBAY_CONNECT_TIMEOUT = env_float("MODELBAY_CONNECT_TIMEOUT", 1.0)
MODELBAY_READY_TIMEOUT = env_float("MODELBAY_READY_TIMEOUT", 60.0)
# A call to a service at zero is held while an instance starts, at most this long (and never
# past the call's own deadline); then 503 unavailable with Retry-After.
MODELBAY_COLD_START_TIMEOUT_S = env_float("MODELBAY_COLD_START_TIMEOUT_S", 60.0)
MODELBAY_RUNTIME_PYTHON = env_str("MODELBAY_RUNTIME_PYTHON", sys.executable)
# The local backend runs each instance in a bubblewrap sandbox (controlplane.backends.sandbox)
# and refuses to start instances where none can be made. MODELBAY_UNSANDBOXED_LOCAL=1 runs
# them as plain processes of the worker instead: UNSAFE, for a single-user laptop only
# (a model then reads and writes all the worker can, and reaches the network).
MODELBAY_UNSANDBOXED_LOCAL = env_bool("MODELBAY_UNSANDBOXED_LOCAL", False)
# When the worker is root, each sandboxed instance runs as a uid of its own from this
# base on (65,536 of them): choose a range no account of the host uses.
MODELBAY_SANDBOX_UID_BASE = env_int("MODELBAY_SANDBOX_UID_BASE", 600_000)
# A cgroup v2 folder delegated to the worker (cpu, memory and pids controllers enabled for
# its children): each instance gets a folder in it with its limits. Empty: rlimits (memory
# and processes; CPU is not limited then).
MODELBAY_SANDBOX_CGROUP = env_str("MODELBAY_SANDBOX_CGROUP", "")
# The size of a sandbox's (or container's) private /tmp.
MODELBAY_SANDBOX_TMP_MB = env_int("MODELBAY_SANDBOX_TMP_MB", 64)
# What an instance prints is kept up to this many bytes per file, in its log and one
# rotated file before it (the local backend's log writer; the Docker json-file driver).
MODELBAY_INSTANCE_LOG_BYTES = env_int("MODELBAY_INSTANCE_LOG_BYTES", 5 * 1024 * 1024)
# A process nothing owns is removed only once it is this old: a pass in another worker
# may have started it moments ago, before its instance row was committed.
MODELBAY_ORPHAN_GRACE_S = env_float("MODELBAY_ORPHAN_GRACE_S", 30.0)
MODELBAY_KEY_TOUCH_INTERVAL = env_float("MODELBAY_KEY_TOUCH_INTERVAL", 60.0)
# A version taken out of a service keeps its instances this long after it left the routing
# table, so every gateway process has stopped sending it calls; then they drain and stop.
MODELBAY_DRAIN_S = env_float("MODELBAY_DRAIN_S", 2.0)

# Per-instance resources: a service's "resources" overrides the defaults, up to the maximums.
MODELBAY_DEFAULT_CPU = env_float("MODELBAY_DEFAULT_CPU", 1.0)
MODELBAY_DEFAULT_MEMORY_MB = env_int("MODELBAY_DEFAULT_MEMORY_MB", 1024)
MODELBAY_MAX_CPU = env_float("MODELBAY_MAX_CPU", 4.0)
MODELBAY_MAX_MEMORY_MB = env_int("MODELBAY_MAX_MEMORY_MB", 8192)
MODELBAY_PIDS_LIMIT = env_int("MODELBAY_PIDS_LIMIT", 256)

# Prometheus' scrape of /metrics needs "Authorization: Bearer <this>"; empty: /metrics is off.
MODELBAY_METRICS_TOKEN = env_str("MODELBAY_METRICS_TOKEN", "")

# --- the docker backend ---------------------------------------------------------------
# Zones map to Docker endpoints in MODELBAY_ZONES (zone-a=unix:///var/run/docker.sock,...);
# a zone without one uses DOCKER_HOST or the local socket.
# An engine on another host (tcp://host:2376) is called over TLS with a client certificate
# only: MODELBAY_ZONE_TLS=zone-b=/path/to/certs names the folder holding ca.pem, cert.pem and
# key.pem (the docker CLI's layout). A tcp zone without it stops the settings from loading.
MODELBAY_ZONE_TLS = parse_zone_tls(
    env_str("MODELBAY_ZONE_TLS", ""),
    MODELBAY_ZONES,
    docker_host=env_str("DOCKER_HOST") if MODELBAY_RUNTIME_BACKEND == "docker" else "",
    docker_tls_verify=env_str("DOCKER_TLS_VERIFY"),
)
MODELBAY_RUNTIME_IMAGE = env_str("MODELBAY_RUNTIME_IMAGE", "modelbay/runtime:latest")
# Containers on an engine of another host publish their port on this address of that host,
# and the gateway calls them at the zone endpoint's host; on this host's engine they have
# no network (the gateway calls their Unix socket).
MODELBAY_DOCKER_PUBLISH_HOST = env_str("MODELBAY_DOCKER_PUBLISH_HOST", "127.0.0.1")
# Where the Docker host sees MODELBAY_ARTIFACT_ROOT (differs when the worker runs in a container).
MODELBAY_DOCKER_ARTIFACT_ROOT = Path(env_str("MODELBAY_DOCKER_ARTIFACT_ROOT", str(MODELBAY_ARTIFACT_ROOT)))
# Where the Docker host sees MODELBAY_RUN_DIR (instances' credential files and socket folders), when the worker
# runs in a container; empty: beside MODELBAY_DOCKER_ARTIFACT_ROOT as the run dir is beside
# the artifacts (controlplane.backends.docker._docker_host_path).
MODELBAY_DOCKER_RUN_DIR = env_str("MODELBAY_DOCKER_RUN_DIR", "")
MODELBAY_DOCKER_TMPFS_MB = env_int("MODELBAY_DOCKER_TMPFS_MB", 64)
MODELBAY_DOCKER_TIMEOUT = env_float("MODELBAY_DOCKER_TIMEOUT", 10.0)  # per Docker API call
# pip inside per-model image builds trusts these CAs (a site's own, a proxy's).
MODELBAY_BUILD_CA_BUNDLE = env_str("MODELBAY_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")

# Request bodies read by Django itself (not file parts of an upload).
DATA_UPLOAD_MAX_MEMORY_SIZE = MODELBAY_MAX_PREDICT_BYTES

# --- Security: HTTPS and response headers -----------------------------------------------
# Served over https (MODELBAY_SITE_URL says so): cookies travel only over TLS and browsers
# are told to come back over https only (HSTS, a year; subdomains only when asked, since
# they may not all serve https). Each can be set apart from the environment.
SITE_IS_HTTPS = SITE_URL.lower().startswith("https://")
SESSION_COOKIE_SECURE = env_bool("MODELBAY_SECURE_COOKIES", SITE_IS_HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("MODELBAY_HSTS_SECONDS", 365 * 24 * 3600 if SITE_IS_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("MODELBAY_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
# Behind a proxy that terminates TLS, a request is secure when the proxy says so. Only
# then: without a proxy that sets (or strips) X-Forwarded-Proto, a client could send it.
if env_bool("MODELBAY_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Content-Security-Policy (modelbay.core.csp), on http too: the console loads only its own
# static JavaScript and CSS. 'sha256-...' is the one inline <style> of templates/500.html
# (modelbay/tests/test_security.py checks it still matches). MODELBAY_CSP="" sends none.
MODELBAY_CSP = env_str(
    "MODELBAY_CSP",
    "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'sha256-efFTA4Jg4a1Qj0CyIIZPD4rzBB1/Gg2E0j1Wb67r09A='; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
# Pages that are not ours: drf-spectacular's Swagger UI starts itself with an inline script
# (whose text holds the request's query) and an inline style.
MODELBAY_CSP_PATHS = {
    "/api/docs/": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
    )
    if MODELBAY_CSP
    else "",
}
