"""Small helpers shared by the adapter tests (each adapter is tested only through its fake, over HTTP)."""

import uuid

from routes.providers.base import SendRequest, WebhookRequest


def send_request(phone="+79123456789", text="Код: 1234", *, reference=None, **kwargs) -> SendRequest:
    return SendRequest(phone=phone, text=text, reference=reference or str(uuid.uuid4()), **kwargs)


def adapter(cls, fake, *, sender="ACME", credentials=None, base_url=None):
    return cls(credentials=fake.credentials if credentials is None else credentials, sender=sender,
               base_url=base_url or fake.base_url)


def form_of(request) -> dict:
    """A fake's recorded form request as name -> last value."""
    return {name: values[-1] for name, values in request.form.items()}


def webhook(*, url="https://smsgate.example.com/webhooks/x/token/", form=None, query=None, body=b"", headers=None,
            method="POST") -> WebhookRequest:
    form = {k: v if isinstance(v, list) else [v] for k, v in (form or {}).items()}
    query = {k: v if isinstance(v, list) else [v] for k, v in (query or {}).items()}
    return WebhookRequest(url=url, method=method, headers={k.lower(): v for k, v in (headers or {}).items()},
                          body=body, form=form, query=query)
