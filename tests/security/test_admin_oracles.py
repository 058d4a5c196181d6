"""Admin reads that could be turned into oracles or full-table work (issue 13, item 2 follow-ups).

- Staff who see phones masked (5 digits hidden) may search by exact phone, but only so often: an
  unlimited exact search would read a masked phone back in at most 100,000 guesses.
- Deep pages are not served: ?p=N costs an OFFSET walk over N x 50 rows of the index.
- Accounts cannot be deleted: the confirmation page would list every delivery they protect."""

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.urls import reverse

from deliveries.models import Delivery
from deliveries.paginators import MAX_PAGES
from deliveries.services.intake import delivery_create
from tests.staff import staff_client

pytestmark = pytest.mark.django_db

DELIVERIES = reverse("admin:deliveries_delivery_changelist")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def delivery(account, settings):
    settings.SMSGATE_DEFAULT_ROUTE = "console"
    return delivery_create(account=account, phone="+79123456789", text="Code 4711").delivery


def found(response, delivery) -> bool:
    return str(delivery.pk) in response.content.decode()


def test_staff_who_see_phones_masked_have_a_budget_of_phone_searches(delivery, settings):
    settings.SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR = 3
    client, _user = staff_client("deliveries.view_delivery", username="masked")
    guesses = [f"+7912345{n:04d}" for n in range(6780, 6789)] + ["+79123456789"]
    answers = [client.get(DELIVERIES, {"q": guess}, HTTP_ACCEPT_LANGUAGE="en") for guess in guesses]
    assert all(answer.status_code == 200 for answer in answers)
    assert not any(found(answer, delivery) for answer in answers)  # the right guess came after the budget
    assert "too many phone searches" in answers[-1].content.decode()
    assert "Слишком много поисков" in client.get(DELIVERIES, {"q": "+79123456789"}, HTTP_ACCEPT_LANGUAGE="ru").content.decode()
    # Other searches are not phone guesses: the delivery id still finds it.
    assert found(client.get(DELIVERIES, {"q": str(delivery.pk)}), delivery)


def test_the_budget_is_per_user_and_not_for_those_who_see_the_text(delivery, settings):
    settings.SMSGATE_ADMIN_PHONE_SEARCHES_PER_HOUR = 1
    first, _ = staff_client("deliveries.view_delivery", username="first")
    second, _ = staff_client("deliveries.view_delivery", username="second")
    trusted, _ = staff_client("deliveries.view_delivery", "deliveries.view_message_text", username="trusted")
    assert found(first.get(DELIVERIES, {"q": "+79123456789"}), delivery)
    assert not found(first.get(DELIVERIES, {"q": "+79123456789"}), delivery)
    assert found(second.get(DELIVERIES, {"q": "8 (912) 345-67-89"}), delivery)
    for _ in range(3):
        assert found(trusted.get(DELIVERIES, {"q": "+79123456789"}), delivery)


def test_deep_pages_are_not_served(delivery, account, monkeypatch):
    from deliveries.admin import DeliveryAdmin
    from deliveries.paginators import EstimatedCountPaginator

    for n in range(2):
        delivery_create(account=account, phone=f"+7912345670{n}", text="Code")
    monkeypatch.setattr(DeliveryAdmin, "list_per_page", 1)  # 3 rows: 3 pages, of which 2 are served
    monkeypatch.setattr(EstimatedCountPaginator, "max_pages", 2)
    client, _ = staff_client(superuser=True, username="root")
    assert client.get(DELIVERIES, {"p": "2"}).status_code == 200
    deep = client.get(DELIVERIES, {"p": "3"})
    assert deep.status_code == 302 and "e=1" in deep["Location"]  # Django's own "invalid page" answer


def test_a_paginator_never_offers_more_than_the_cap():
    from deliveries.paginators import EstimatedCountPaginator

    paginator = EstimatedCountPaginator(Delivery.objects.none(), 50)
    paginator.count = 10_000_000  # an estimate on a big table
    assert paginator.num_pages == MAX_PAGES


def test_accounts_are_disabled_never_deleted(delivery):
    client, _ = staff_client(superuser=True, username="root")
    account = delivery.account
    assert client.get(reverse("admin:accounts_account_delete", args=[account.pk])).status_code == 403
    page = client.get(reverse("admin:accounts_account_changelist"))
    assert "delete_selected" not in page.content.decode()
    assert client.post(reverse("admin:accounts_account_delete", args=[account.pk]), {"post": "yes"}).status_code == 403
    account.refresh_from_db()
