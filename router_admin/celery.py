"""The Celery app: ``celery -A router_admin worker`` and ``celery -A router_admin beat``.

Configured from Django's settings (the ``CELERY_`` ones); each app's ``tasks`` module is
found on its own. Building the app connects to nothing: the broker is contacted only when
a task is sent or a worker starts.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")

app = Celery("router_admin")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_folders = (app.conf.broker_transport_options or {}).get("data_folder_in")
if _folders:
    # The filesystem transport of the embedded default needs its folder to exist.
    os.makedirs(_folders, exist_ok=True)
