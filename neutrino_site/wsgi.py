"""WSGI entry point: the API and dashboard pages. `neutrino serve` runs it under gunicorn (gthread)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "neutrino_site.settings")

application = get_wsgi_application()
