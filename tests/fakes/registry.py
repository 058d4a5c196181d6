"""Every fake provider by slug (kept out of the package __init__ so `python -m tests.fakes.<slug>` stays clean)."""

from .devino import FakeDevino
from .smsaero import FakeSmsAero
from .smsc import FakeSmsc
from .smsru import FakeSmsRu
from .twilio import FakeTwilio

FAKES = {cls.slug: cls for cls in (FakeSmsRu, FakeSmsc, FakeSmsAero, FakeTwilio, FakeDevino)}
