"""Schemathesis against the account API's own OpenAPI schema: whatever it sends to any operation,
never a 5xx, and every answer matches the schema."""

from collections import Counter

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from routes.models import ProviderRoute
from crm.models import SmsTemplate
from deliveries.services.intake import delivery_create
from smsgate.wsgi import application

EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def api_schema():
    # As Django's test client does: in-process requests must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def operations(api_schema):
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.django_db
def test_the_api_never_answers_5xx_and_matches_its_schema(api_schema, account, make_token):
    route = ProviderRoute.objects.create(account=account, provider="console", priority=1)
    delivery = delivery_create(account=account, phone="+79123456789", text="Код 1234").delivery
    template = SmsTemplate.objects.create(account=account, name="Reminder", text="Hi {{contact.first_name}}")
    known_ids = {"routes": route.pk, "deliveries": str(delivery.pk), "templates": template.pk}
    checked, statuses = [], Counter()

    for operation in operations(api_schema):
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.headers = {**(case.headers or {}), "X-Auth-Token": make_token()}
            if case.path_parameters and "id" in case.path_parameters and hash(str(case.path_parameters)) % 2:
                # Half the time aim at a real object of the account, so deeper code runs too.
                case.path_parameters["id"] = known_ids[case.path.split("/")[3]]
            response = case.call()
            statuses[response.status_code // 100] += 1
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    print(f"\nschemathesis: {len(checked)} operations, answers by class {dict(statuses)}")
    assert len(checked) >= 24, checked
    assert statuses[2] and statuses[4] and not statuses[5]
