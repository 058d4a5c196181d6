"""End to end: amoCRM's POST → gunicorn → PostgreSQL → Redis → a Celery worker → a fake provider, whose
signed delivery report comes back over real HTTP to the gunicorn webhook and ends `delivered`."""

import httpx
import pytest

from deliveries.models import Delivery, DeliveryStatus, StatusEvent
from tests.fakes.registry import FAKES

from .stack import wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("slug,sender", [
    ("twilio", "+15005550006"),  # per-message StatusCallback, X-Twilio-Signature
    ("smsru", "ACME"),  # account-level callback URL, batched data[] records with a sha256 hash
])
def test_a_delivery_report_comes_back_through_the_webhook(stack, route_for, make_token, slug, sender):
    fake = FAKES[slug](status_delays=(0.2, 0.2)).start()
    try:
        route = route_for(fake, sender=sender)
        stack.env["SMSGATE_PROVIDER_BASE_URLS"] = f"{slug}={fake.base_url}"
        web = stack.start_web()
        stack.env["SMSGATE_PUBLIC_URL"] = stack.web_url  # the worker builds callback URLs from it
        worker = stack.start_worker()
        callback_url = f"{stack.web_url}/webhooks/{slug}/{route.callback_token}/"
        if slug == "smsru":
            fake.callback_urls.append(callback_url)  # registered once per SMS.ru account (route_set does it)

        response = httpx.post(f"{stack.web_url}/amocrm/sms", timeout=10,
                              data={"phone": "+79123456789", "text": "Код для входа: 834622", "token": make_token()})
        assert response.status_code == 200, response.text
        delivery_id = response.json()["id"]

        wait_for(lambda: Delivery.objects.get(pk=delivery_id).status == DeliveryStatus.DELIVERED, 30,
                 f"not delivered; callbacks {fake.callbacks}\nweb log:\n{web.log()}\nworker log:\n{worker.log()}")
        delivery = Delivery.objects.get(pk=delivery_id)
        assert delivery.provider == slug and delivery.route_id == route.pk and delivery.finished_at
        assert ("webhook", "delivered") in set(
            StatusEvent.objects.filter(delivery=delivery, applied=True).values_list("source", "status"))
        assert fake.callbacks and {c.url for c in fake.callbacks} == {callback_url}
        assert all(c.status in (200, 204) for c in fake.callbacks)
        [received] = fake.received
        assert received.text == "Код для входа: 834622" and fake.duplicates() == {}
        for log in (web.log(), worker.log()):
            assert "834622" not in log and "+79123456789" not in log
    finally:
        fake.stop()
