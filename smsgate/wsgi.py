import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smsgate.settings")
django_application = get_wsgi_application()

from smsgate.admission import AdmissionMiddleware  # noqa: E402 (needs the settings configured above)
from smsgate.bodylimit import BodyLimitMiddleware  # noqa: E402

# In front of Django: admission control first (a refusal must cost as little as possible,
# smsgate/admission.py), then request bodies bounded, chunked ones included (smsgate/bodylimit.py).
application = AdmissionMiddleware(BodyLimitMiddleware(django_application))
