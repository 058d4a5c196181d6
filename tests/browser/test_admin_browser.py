"""Staff review in real Chromium: log in, open deliveries, filter by status, search a phone, open
a delivery and see its attempts; no page shows a stored secret or an unmasked code. Screenshots
of every step are kept in test-artifacts/."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from routes.models import ProviderRoute
from deliveries.models import DeliveryStatus, StatusEvent
from deliveries.services.dispatch import delivery_send
from deliveries.services.intake import delivery_create
from deliveries.services.reports import delivery_status_apply
from tests.conftest import SECRET
from tests.fakes.smsru import FakeSmsRu

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

ROUTE_SECRET = "browser-route-secret-7c1e9a"
CODE = "834622"
PHONE = "+79123456789"
STAFF_PERMISSIONS = ["deliveries.view_delivery", "accounts.view_account", "accounts.change_account",
                     "routes.view_providerroute", "routes.change_providerroute", "accounts.view_integration",
                     "accounts.change_integration"]


@pytest.fixture
def review_data(transactional_db, account, settings):
    """Deliveries sent for real over HTTP to the local fake SMS.ru, one of them delivered."""
    with FakeSmsRu(api_id=ROUTE_SECRET) as fake:
        settings.SMSGATE_PROVIDER_BASE_URLS = {"smsru": fake.url}
        route = ProviderRoute.objects.create(account=account, provider="smsru", priority=1,
                                             credentials={"api_id": ROUTE_SECRET})
        delivered = delivery_create(account=account, phone=PHONE, text=f"Код для входа: {CODE}").delivery
        delivery_send(delivery_id=delivered.pk)
        delivered.refresh_from_db()
        delivery_status_apply(delivery=delivered, status=DeliveryStatus.DELIVERED,
                              source=StatusEvent.Source.WEBHOOK, provider_code="103",
                              occurred_at=timezone.now(), raw={"sms_id": delivered.provider_message_id,
                                                               "sms_status": "103"})
        other = delivery_create(account=account, phone="+79123456700", text="Код для входа: 111999").delivery
        delivery_send(delivery_id=other.pk)
        delivery_create(account=account, phone="+79000000207", text="Код для входа: 222888")  # stays pending
    user = User.objects.create_user("reviewer", password="review-pass-1", is_staff=True)
    for permission in STAFF_PERMISSIONS:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    delivered.refresh_from_db()
    return {"delivered": delivered, "route": route, "account": account}


def test_staff_review_in_chromium(live_server, review_data, chromium):
    # The data exists before Playwright starts its event loop in this thread (see conftest).

    context = chromium.new_context(locale="ru-RU", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    visited = []

    def step(name):
        page.wait_for_load_state("load")
        page.screenshot(path=str(ARTIFACTS / f"admin-{len(visited) + 1:02d}-{name}.png"), full_page=True)
        html = page.content()
        visited.append((name, page.url, html))
        return html

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    step("login")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", "review-pass-1")
    page.click("input[type=submit]")
    assert "/admin/login/" not in page.url
    step("index")

    page.click('#content-main a[href="/admin/deliveries/delivery/"]')
    html = step("deliveries")
    assert page.locator("#result_list tbody tr").count() == 3
    assert "+7 912 ***-**-89" in html

    page.click('#changelist-filter a[href="?status__exact=delivered"]')
    step("filtered-delivered")
    assert "status__exact=delivered" in page.url
    assert page.locator("#result_list tbody tr").count() == 1

    page.fill("#searchbar", "8 (912) 345-67-89")
    page.press("#searchbar", "Enter")
    step("phone-search")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "+7 912 ***-**-89" in rows.first.inner_text()

    rows.first.locator("a").first.click()
    html = step("delivery")
    delivered = review_data["delivered"]
    assert str(delivered.pk) in page.url
    timeline = page.locator("#timeline")
    assert timeline.is_visible()
    assert page.locator(".sms-timeline-entry").count() == 3  # accepted, the attempt, the delivery report
    assert delivered.provider_message_id in timeline.inner_text()
    assert "Код для входа: ••••••" in html

    page.goto(f"{live_server.url}/admin/accounts/account/{review_data['account'].pk}/change/")
    html = step("account")
    assert 'type="password"' in html
    page.goto(f"{live_server.url}/admin/accounts/providerroute/{review_data['route'].pk}/change/")
    step("route")
    page.goto(f"{live_server.url}/admin/accounts/integration/{review_data['account'].integration_id}/change/")
    step("integration")
    page.goto(f"{live_server.url}/admin/deliveries/delivery/dashboard/")
    html = step("dashboard")
    assert len(re.findall(r"<svg id=\"chart-", html)) >= 2  # the failure chart only when there are failures

    for name, url, html in visited:
        for forbidden in (ROUTE_SECRET, SECRET, CODE, "111999", "222888", PHONE, PHONE.lstrip("+")):
            assert forbidden not in html, f"{forbidden!r} on the {name} page ({url})"
    context.close()
