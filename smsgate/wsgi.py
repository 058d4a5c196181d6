import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")
django_application = get_wsgi_application()

from smsgate.bodylimit import BodyLimitMiddleware  # noqa: E402 (needs the settings configured above)

# Request bodies are bounded in front of Django, chunked ones included (smsgate/bodylimit.py).
application = BodyLimitMiddleware(django_application)
