"""What amoCRM itself sends to a widget's server, for tests of our endpoints: the digital-pipeline
webhook and Salesbot's `widget_request`.
"""

import json
import time
from urllib.parse import quote_plus

import jwt

# digital_pipeline/integrations, "Список возможных значений type и type_code".
DP_EVENTS = {1: "lead_added", 14: "lead_status_changed", 15: "lead_appeared_in_status", 16: "mail_in",
             17: "call_in", 18: "site_visit", 19: "chat", 20: "customer_added", 21: "customer_period_changed",
             22: "customer_appeared_in_period"}
# The docs do not give a bot token's lifetime; we use the 30 minutes of the other disposable tokens.
BOT_TOKEN_LIFETIME = 30 * 60


def php_form(data: dict) -> str:
    """A nested dict as PHP's `http_build_query` writes it: `event[data][id]=1`, brackets percent-encoded,
    spaces as `+`, lists as `key[0]`, `key[1]`."""
    pairs = []

    def walk(prefix: str, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list):
            for n, item in enumerate(value):
                walk(f"{prefix}[{n}]", item)
        else:
            text = "1" if value is True else "0" if value is False else "" if value is None else str(value)
            pairs.append(f"{quote_plus(prefix)}={quote_plus(text)}")

    walk("", data)
    return "&".join(pairs)


def dp_webhook_body(*, account_id: int, subdomain: str, lead_id: int, status_id: int, pipeline_id: int | None,
                    event_type: int, settings: dict, element_type: int, direction: str | None,
                    event_time: int | None) -> dict:
    """The widget's digital-pipeline webhook (digital_pipeline/integrations, "Пример ответа")."""
    data = {"id": lead_id, "element_type": element_type, "status_id": status_id}
    if pipeline_id is not None:
        data["pipeline_id"] = pipeline_id
    # "The property is in the hook's body only when element_type = 2" (a lead).
    if element_type == 2 and direction:
        data["direction_of_movement"] = direction
    return {"event": {"type": event_type, "type_code": DP_EVENTS[event_type], "data": data,
                      "time": int(time.time()) if event_time is None else event_time},
            "action": {"settings": {"widget": {"settings": dict(settings)}}},
            "subdomain": subdomain, "account_id": account_id}


def encode(body: dict, encoding: str) -> tuple[bytes, str]:
    """The docs print the webhook as JSON; widgets in the wild receive it form-encoded with PHP bracket keys
    (amocrm-platform.md §3.7). Both are offered."""
    if encoding == "json":
        return json.dumps(body, ensure_ascii=False).encode(), "application/json"
    if encoding == "form":
        return php_form(body).encode(), "application/x-www-form-urlencoded"
    raise ValueError(f"encoding must be 'form' or 'json', not {encoding!r}")


def bot_token(*, secret: str, account_id: int, subdomain: str, entity_type, entity_id: int, bot_type: str,
              aud: str | None, client_uuid: str | None, issued_at: int | None, lifetime: int,
              algorithm: str, extra: dict | None) -> str:
    """A Salesbot/Marketingbot token as the official SDK reads it: `AmoCRMOAuth::parseBotDisposableToken`
    checks an HS512 signature with the client secret, the time claims and, only when given a receiver
    path, `aud`; `BotDisposableTokenModel::fromJwtToken` reads `iss`, `subdomain`, `account_id`,
    `entity_type` (2 -> leads, 12 -> customers), `entity_id`, `bot_type`, `exp` and `client_uuid`
    (amocrm/amocrm-api-php, src/AmoCRM/OAuth/AmoCRMOAuth.php, src/AmoCRM/Models/BotDisposableTokenModel.php).
    digital_pipeline/salesbot lists iss, aud, iat, nbf, exp plus account_id, subdomain, entity_type,
    entity_id. No `jti`; `client_uuid` only when asked for (the SDK reads it, the docs do not list it)."""
    now = int(time.time()) if issued_at is None else issued_at
    claims = {"iss": f"https://{subdomain}.amocrm.ru", "iat": now, "nbf": now, "exp": now + lifetime,
              "account_id": account_id, "subdomain": subdomain, "entity_type": entity_type,
              "entity_id": entity_id, "bot_type": bot_type}
    if aud is not None:
        claims["aud"] = aud
    if client_uuid is not None:
        claims["client_uuid"] = client_uuid
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm=algorithm)
