"""Settings for Binom Router, read from the environment.

Without ``DATABASE_URL`` (or with a ``sqlite:///`` one) the router runs on its embedded
default: an SQLite file, no Redis, a local-memory cache, and development-friendly secrets.
With a PostgreSQL ``DATABASE_URL`` it is a production deployment and the secrets become
required.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from router_admin.env import (
    env_bool,
    env_int,
    env_list,
    env_str,
    parse_database_url,
    proxy_ssl_header,
    redis_prefix,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DATABASE_URL = env_str("DATABASE_URL", "")
# The embedded default is any SQLite database: one machine, development-friendly secrets.
EMBEDDED = DATABASE_URL == "" or DATABASE_URL.startswith("sqlite:")

DEBUG = env_bool("DEBUG", EMBEDDED)
# Only the embedded default may run without a real secret; a deployment that forgot it
# must not come up with a guessable session-signing key.
SECRET_KEY = (
    env_str("SECRET_KEY", "embedded-insecure-key-do-not-deploy")
    if EMBEDDED
    else env_str("SECRET_KEY")
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if EMBEDDED else [])

# Fernet keys (comma-separated, newest first) that encrypt upstream secrets at rest.
# The embedded default derives one from SECRET_KEY so a new checkout works at once.
ROUTER_ENCRYPTION_KEYS = env_list("ROUTER_ENCRYPTION_KEYS", [])
if not ROUTER_ENCRYPTION_KEYS:
    if not EMBEDDED:
        env_str("ROUTER_ENCRYPTION_KEYS")  # raises: required outside the embedded default
    ROUTER_ENCRYPTION_KEYS = [
        base64.urlsafe_b64encode(
            hashlib.sha256(b"binom-router-encryption:" + SECRET_KEY.encode()).digest()
        ).decode()
    ]

REDIS_URL = env_str("REDIS_URL", "")

INSTALLED_APPS = [
    # Django's admin on our site class: staff sign in with a second factor (admin_site.py).
    "router_admin.admin_site.RouterAdminSiteConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us: /api/docs/ works offline
    # Staff's second factor: authenticator apps (TOTP) and single-use recovery codes.
    "django_otp",
    "accounts.two_factor.apps.AuthenticatorAppsConfig",  # django_otp.plugins.otp_totp
    "accounts.two_factor.apps.RecoveryCodesConfig",  # django_otp.plugins.otp_static
    "router_admin",
    "accounts",
    "organizations",
    "billing",
    "proxy",
    "portal",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and portal's static files from the ASGI server itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise: static files need no policy, only the pages that load them.
    "router_admin.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor.
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The /v1 API runs under its own handler with only these (async-only) middleware.
ROUTER_API_MIDDLEWARE = ["proxy.entry.middleware.RequestIdMiddleware"]

ROOT_URLCONF = "router_admin.urls"
WSGI_APPLICATION = "router_admin.wsgi.application"
ASGI_APPLICATION = "router_admin.asgi.application"

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

EMBEDDED_DATABASE_URL = f"sqlite:///{BASE_DIR / 'var' / 'router.sqlite3'}"
DATABASES = {"default": parse_database_url(DATABASE_URL or EMBEDDED_DATABASE_URL)}
# How long a request waits for the database before it is answered 503: for a pooled
# connection to free up, and (in whole seconds, at least 2: libpq's unit and minimum) for a
# new connection to open, unless DATABASE_URL names its own connect_timeout.
ROUTER_DB_WAIT_MS = env_int("ROUTER_DB_WAIT_MS", 2000, minimum=100)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"].setdefault(  # type: ignore[attr-defined]
        "connect_timeout", str(max(2, (ROUTER_DB_WAIT_MS + 999) // 1000)))
# Connections each router process keeps for reserving and settling requests.
ROUTER_DB_POOL_SIZE = env_int("ROUTER_DB_POOL_SIZE", 10, minimum=1)
# Reservations and settles that overlap in time go to PostgreSQL as one statement each
# (billing.services.hot_path); off, every request sends its own.
ROUTER_DB_BATCHING = env_bool("ROUTER_DB_BATCHING", True)
# How long the charge of an answer already sent waits to share a statement with others.
ROUTER_SETTLE_LINGER_MS = env_int("ROUTER_SETTLE_LINGER_MS", 20, minimum=0)
# How long a request its money cannot cover waits for the holds of the same wallet (or key)
# in flight to settle before it is answered 402 (0: at once). See proxy.money.room.
ROUTER_RESERVE_WAIT_MS = env_int("ROUTER_RESERVE_WAIT_MS", 5000, minimum=0)

# How long an invitation to an organization stays valid.
ROUTER_INVITATION_DAYS = env_int("ROUTER_INVITATION_DAYS", 7, minimum=1)

# How often each router process writes its counts of refused requests (402, 429) for the
# usage list: one statement per interval, none per refusal (proxy.money.refusals).
ROUTER_REFUSALS_FLUSH_MS = env_int("ROUTER_REFUSALS_FLUSH_MS", 5000, minimum=1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Every key the router writes in Redis (limits, worker slots, circuits, the beat lock, the
# cache, Celery's queues) starts with this: deployments sharing one Redis, or one whose
# database was recreated under another name, never see each other's state.
ROUTER_REDIS_PREFIX = redis_prefix(DATABASES["default"])

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
         "KEY_PREFIX": f"{ROUTER_REDIS_PREFIX}cache"}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
WHITENOISE_USE_FINDERS = DEBUG  # no collectstatic needed for the embedded default
# Files served at the site's root: /favicon.ico, which browsers and tools ask for by that name
# on pages that do not link an icon (JSON, the API's answers opened in a browser).
WHITENOISE_ROOT = BASE_DIR / "router_admin" / "site_root"
# With DEBUG off (production) WhiteNoise serves what collectstatic (`make serve` runs it)
# wrote: scripts minified (Django's admin ships most of its own unminified), names that carry
# a hash of the content, so browsers may cache them forever, and each file also stored
# compressed (router_admin/static_storage.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
                    if DEBUG else "router_admin.static_storage.MinifiedCompressedManifestStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Binom Router self-service API",
    "DESCRIPTION": "Balance, API keys, usage and vouchers of the signed-in user.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Only the self-service API (/api/...) is described; tags come from the segment after it.
    "PREPROCESSING_HOOKS": ["portal.api.schema.only_self_service_api"],
    "SCHEMA_PATH_PREFIX": "/api",
    "ENUM_NAME_OVERRIDES": {"KeyStatusEnum": ["active", "expired", "revoked"],
                            "UsageStatusEnum": "billing.models.UsageRecord.Status",
                            "TopUpStatusEnum": ["creating", "open", "paid", "expired", "failed"]},
    # No CDN: the docs page loads Swagger UI from our own static files, and never asks the
    # public validator service about our schema.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None,
                            "persistAuthorization": False},
}
# Requests to /api per user per minute (all their sessions and tokens together).
ROUTER_API_RATE_PER_MINUTE = env_int("ROUTER_API_RATE_PER_MINUTE", 300, minimum=1)

# The portal: where sign-in sends people, and where they land.
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"

# Staff reach the admin only after a second factor (an authenticator app's code, or a
# recovery code): the admin moves money. On whenever DEBUG is off; `make run`'s demo admin
# (DEBUG on) signs in with the password alone unless this is turned on.
ROUTER_STAFF_2FA = env_bool("ROUTER_STAFF_2FA", not DEBUG)
OTP_TOTP_ISSUER = "Binom Router"  # the name authenticator apps show beside the code
# The admin never shows an authenticator's secret or a recovery code back.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Stripe Checkout top-ups. Without both keys the top-up page says card top-ups are off.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", "")
# Tests point this at a local server standing in for api.stripe.com.
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com")
# Who issues the receipts of top-ups: the operator's name as it should appear on them.
ROUTER_RECEIPT_ISSUER = env_str("ROUTER_RECEIPT_ISSUER", "Binom Router").strip() or "Binom Router"

# --- Security of the site (admin, portal). Production = DEBUG off, the default whenever
# DATABASE_URL names PostgreSQL. `manage.py check --deploy` reports only the opt-ins below
# that are off by default, each for the reason given (tests/router_admin/
# test_production_settings.py holds it to that).
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy of every page (portal, admin, API docs; not the /v1 API): code,
# styles and everything else from this origin only, and never inline, so injected markup
# cannot run or restyle anything. Pages keep their scripts and styles in static files.
# Images may be data: URIs (Swagger UI's icons). Forms may also lead to Stripe Checkout:
# the top-up form posts here and is redirected there, and browsers hold redirects to
# form-action too.
ROUTER_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'", "https://checkout.stripe.com"],
}
# Behind a proxy that ends TLS, the header by which it says the client used https (e.g.
# X-Forwarded-Proto). Set it only if every request reaches the router through such a proxy,
# which overwrites the header: otherwise a client could claim https.
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env_str("SECURE_PROXY_SSL_HEADER", ""))
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    # Sent on https answers only. One year, for this host; subdomains (W005) and browsers'
    # preload lists (W021) are opt-ins, because they commit names this router does not serve.
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    # Opt-in (W008): TLS usually ends at the load balancer, which redirects plain http
    # itself, and behind a plain-http proxy without SECURE_PROXY_SSL_HEADER every request
    # would redirect forever. Only the site redirects: the /v1 API and health checks never
    # do (an API client would not repeat its POST).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Largest request body accepted (413 past it), and how long key, price and worker lookups
# are cached in each process (a revoked key stops working within this many seconds).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("ROUTER_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
ROUTER_LOOKUP_TTL_SECONDS = env_int("ROUTER_LOOKUP_TTL_SECONDS", 5, minimum=0)
# While a process that served requests in the last five minutes is quiet, how often it
# touches its connections (a Redis PING, an empty statement on each idle PostgreSQL
# connection, a fresh connection to each upstream it called), so that the next request
# finds them open and the processes behind them awake (proxy.entry.keep_warm). 0: off.
ROUTER_KEEP_WARM_MS = env_int("ROUTER_KEEP_WARM_MS", 1000, minimum=0)

# Worker pool: failures in a row that open a worker's circuit, and for how long; how long a
# request waits for a worker with free capacity before 503; workers tried per request.
ROUTER_BREAKER_FAILURES = env_int("ROUTER_BREAKER_FAILURES", 5, minimum=1)
ROUTER_BREAKER_COOLDOWN_SECONDS = env_int("ROUTER_BREAKER_COOLDOWN_SECONDS", 30, minimum=1)
# How often each process reads again, in the background, the circuits other instances may
# have opened (its own failures count at once): requests never wait for Redis to ask.
ROUTER_BREAKER_REFRESH_MS = env_int("ROUTER_BREAKER_REFRESH_MS", 1000, minimum=10)
ROUTER_CAPACITY_WAIT_MS = env_int("ROUTER_CAPACITY_WAIT_MS", 2000, minimum=0)
ROUTER_MAX_ATTEMPTS = env_int("ROUTER_MAX_ATTEMPTS", 3, minimum=1)

# Proxies (addresses or CIDR, comma-separated, or *) whose X-Forwarded-For and
# X-Forwarded-Proto are believed: the client's address and scheme (router_admin/asgi.py).
FORWARDED_ALLOW_IPS = env_list("FORWARDED_ALLOW_IPS", ["127.0.0.1"])

# Who may read /metrics without a staff login (CIDR, comma-separated).
ROUTER_METRICS_ALLOWED_NETWORKS = env_list("ROUTER_METRICS_ALLOWED_NETWORKS",
                                           ["127.0.0.1/32", "::1/128"])

# Users' webhooks may reach private, loopback and link-local addresses (off: public internet
# only, so a user cannot aim the worker at Redis, the metadata service or the office LAN).
ROUTER_WEBHOOKS_ALLOW_PRIVATE = env_bool("ROUTER_WEBHOOKS_ALLOW_PRIVATE", False)

# Email: EMAIL_BACKEND if set, else SMTP once EMAIL_HOST is set, else the console with DEBUG
# on (`make run` prints password resets for the developer). With DEBUG off never the
# console: a reset link printed into a server's log lets whoever reads it take the account.
# With neither set, sending then fails saying what to set (`serve.py check` refuses first).
_EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", (
    "django.core.mail.backends.smtp.EmailBackend" if _EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend" if DEBUG
    else "router_admin.mail.UnconfiguredEmailBackend"))
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "mail"))
EMAIL_HOST = _EMAIL_HOST or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    # Django would find out at the first email, and a failed reset email is only logged.
    raise ImproperlyConfigured("Set EMAIL_USE_TLS (STARTTLS, usually port 587) or "
                               "EMAIL_USE_SSL (port 465), not both.")
# Seconds an SMTP exchange may take: a mail server that hangs must not hold a request.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Binom Router <router@localhost>")

# Put each completion's messages and reply in its access-log line. Off: the lines then hold
# users' data; turn it on to debug, briefly.
ROUTER_LOG_CONTENT = env_bool("ROUTER_LOG_CONTENT", False)

# Billing: how long a request's hold may stay pending before the sweeper resolves it.
ROUTER_HOLD_TTL_SECONDS = env_int("ROUTER_HOLD_TTL_SECONDS", 900, minimum=30)
# Where a router process keeps, on local disk, the charges it could not write while the
# database was away, for itself or the next process on this machine (proxy.money.spool).
# Empty: off (a process that stops takes them with it, and the sweeper releases the holds).
ROUTER_CHARGE_SPOOL_DIR = env_str("ROUTER_CHARGE_SPOOL_DIR",
                                  str(BASE_DIR / "var" / "charge-spool"))
# How often a running stream's progress (what it would be charged if cut there) goes to that
# spool, so that a process killed mid-stream still charges what it delivered, up to this
# long before the kill (proxy.money.checkpoints). 0: off (the sweeper releases such holds).
ROUTER_STREAM_CHECKPOINT_MS = env_int("ROUTER_STREAM_CHECKPOINT_MS", 2000, minimum=0)

# Usage records and holds older than this many whole months (besides the current one) are
# dropped, a monthly partition at a time, once the roll-ups cover them (PostgreSQL; see
# billing.services.retention). 0: keep everything. The ledger and roll-ups are kept always.
ROUTER_USAGE_RETENTION_MONTHS = env_int("ROUTER_USAGE_RETENTION_MONTHS", 0, minimum=0)

# Responses API: how long a stored response (store=true, the default) can be fetched and
# named as previous_response_id; older ones are deleted by the responses-expire beat task.
ROUTER_RESPONSES_RETENTION_DAYS = env_int("ROUTER_RESPONSES_RETENTION_DAYS", 30, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A StreamHandler on stderr, writing what the event loop logs in one turn together
    # (the access lines of a batch of settled requests: one write, not one per line).
    "handlers": {"console": {"class": "router_admin.log_output.LoopTurnStreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django gives its loggers a console handler of their own with DEBUG on; they reach
        # the root's too, so every warning was printed twice under `make run`.
        "django": {"handlers": [], "propagate": True},
        # One line per request, the access log's: psycopg's pool says at INFO that it lent
        # and took back a connection, three lines per billed request.
        "psycopg.pool": {"level": "WARNING"},
        # Seven INFO lines ("Step 1 - Fetching and parsing HTML"...) per PDF receipt.
        "weasyprint.progress": {"level": "WARNING"},
    },
}

# --- Celery: background tasks and the beat schedule (proxy.tasks) ------------------------
# Redis when there is one; otherwise (the embedded default) kombu's filesystem transport:
# messages are files under var/celery, so the web server, a worker and beat in separate
# processes share them with no server at all.
# The filesystem transport ignores the host; naming one spares a warning at every start.
CELERY_BROKER_URL = REDIS_URL or "filesystem://localhost/"
if REDIS_URL:
    # The queues, bindings and unacked messages of kombu's Redis transport.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{ROUTER_REDIS_PREFIX}celery:"}
else:
    _celery_queue = env_str("CELERY_FILESYSTEM_DIR", str(BASE_DIR / "var" / "celery"))
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_queue), "data_folder_out": str(_celery_queue),
        # The exchanges' bindings: kombu's default is ./control, the current directory.
        "control_folder": str(Path(_celery_queue) / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = None  # nothing reads task results; a probe's outcome is on its row
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TIMEZONE = TIME_ZONE
# How often beat probes every enabled worker (GET {base_url}/models) and records its health.
ROUTER_PROBE_INTERVAL_SECONDS = env_int("ROUTER_PROBE_INTERVAL_SECONDS", 30, minimum=1)
# How often beat looks for wallets below their auto top-up threshold (and reconciles the
# charges whose outcome Stripe's webhook has not told): the longest a crossing waits.
ROUTER_AUTO_TOPUP_INTERVAL_SECONDS = env_int("ROUTER_AUTO_TOPUP_INTERVAL_SECONDS", 60,
                                             minimum=1)
CELERY_BEAT_SCHEDULE = {
    "workers-probe": {
        "task": "proxy.tasks.workers_probe",
        "schedule": float(ROUTER_PROBE_INTERVAL_SECONDS),
        # A probe still queued when the next one is due is stale: drop it, do not pile up.
        "options": {"expires": float(ROUTER_PROBE_INTERVAL_SECONDS)},
    },
    # Holds left pending by a process that died: released once past their expiry.
    "holds-sweep": {"task": "billing.tasks.holds_sweep_task", "schedule": 60.0,
                    "options": {"expires": 60.0}},
    "outbox-drain": {"task": "billing.tasks.outbox_drain_task", "schedule": 10.0,
                     "options": {"expires": 10.0}},
    # Wallets below their auto top-up threshold get their charge started; charges whose
    # outcome was missed are reconciled with Stripe (billing.services.auto_topup.runs).
    "auto-topups": {"task": "billing.tasks.auto_topups_task",
                    "schedule": float(ROUTER_AUTO_TOPUP_INTERVAL_SECONDS),
                    "options": {"expires": float(ROUTER_AUTO_TOPUP_INTERVAL_SECONDS)}},
    "usage-rollup": {"task": "billing.tasks.usage_rollup_task", "schedule": 300.0,
                     "options": {"expires": 300.0}},
    # Each wallet's ledger summed per day: what monthly statements read (PostgreSQL).
    "ledger-days": {"task": "billing.tasks.ledger_days_task", "schedule": 60.0,
                    "options": {"expires": 60.0}},
    "worker-rollup": {"task": "proxy.tasks.worker_rollup_task", "schedule": 300.0,
                      "options": {"expires": 300.0}},
    "wallets-reconcile": {"task": "billing.tasks.wallets_reconcile_task",
                          "schedule": 3600.0, "options": {"expires": 3600.0}},
    "responses-expire": {"task": "proxy.tasks.responses_expire", "schedule": 3600.0,
                         "options": {"expires": 3600.0}},
    # Next months' partitions of usage records and holds, then the retention policy.
    "partitions-maintain": {"task": "billing.tasks.partitions_maintain_task",
                            "schedule": 86400.0, "options": {"expires": 3600.0}},
}
# --- end of Celery -----------------------------------------------------------------------
