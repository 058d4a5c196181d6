"""The owner's alerts end to end: Celery beat schedules `deliveries.alerts_check` on the maintenance
queue, a real worker reads the route's balance from the fake SMS.ru and sends the low-balance alert
to the fake amoCRM as a task for the account's administrator, once a day however often beat runs."""

import time
from decimal import Decimal

import pytest

from deliveries.models import AlertSettings, AlertTask
from routes.models import ProviderRoute, RouteBalanceAlert
from tests.accounts.test_amo_client import connect
from tests.conftest import REDIRECT_URI, SECRET
from tests.e2e.stack import wait_for
from tests.fakes.amocrm import FakeAmoCRM
from tests.fakes.smsru import FakeSmsRu

pytestmark = pytest.mark.e2e


def test_beat_and_a_worker_read_the_balance_and_send_the_alert_task_once(stack, account, integration):
    with FakeSmsRu() as sms, FakeAmoCRM(client_id=str(integration.client_uuid), client_secret=SECRET,
                                        redirect_uri=REDIRECT_URI) as amo:
        amo.add_account(account.amo_id, subdomain=account.subdomain)
        connect(amo, account)
        route = ProviderRoute.objects.create(account=account, provider="smsru", sender="ACME",
                                             credentials={"api_id": sms.api_id})
        RouteBalanceAlert.objects.create(route=route, below=Decimal("5000"))
        AlertSettings.objects.create(account=account, amo_tasks=True)
        stack.env.update(SMSGATE_PROVIDER_BASE_URLS=f"smsru={sms.url}", AMO_BASE_URL=amo.url,
                         SMSGATE_ALERTS_EVERY="2")
        worker = stack.start_worker(queues="maintenance")
        stack.start_beat()

        wait_for(lambda: len(amo.tasks(account.amo_id)) == 1, 60,
                 lambda: f"no alert task in amoCRM; worker log:\n{worker.log()[-3000:]}")
        watch = RouteBalanceAlert.objects.get(route=route)
        assert (watch.amount, watch.currency, watch.error) == (Decimal("4122.5600"), "RUB", "")
        [task] = amo.tasks(account.amo_id)
        assert task.text.startswith("smsgate: Низкий баланс на SMS.ru (ACME). Осталось 4")
        assert task.responsible_user_id == amo.account(account.amo_id).admin_id
        checked = watch.checked_at

        # Beat goes on every 2 s: the balance is read again, the task is not sent again today.
        wait_for(lambda: RouteBalanceAlert.objects.get(route=route).checked_at > checked, 30, "no second check")
        time.sleep(3)
        assert len(amo.tasks(account.amo_id)) == 1
        assert AlertTask.objects.get(account=account).task_id == task.id
