"""What people other than the recipient may see of a message text: the one masking policy.

Every digit of a text is hidden wherever a login code could be read by someone who is not its
recipient (the staff admin without the "see the text" permission, the account API for system SMS):
a code, a PIN or an amount cannot be read off the page, and a code split by spaces is masked too.
"""

import re

from smsgate.phones import phone_mask

MASK = "•"
_DIGIT = re.compile(r"\d")
MIN_TEXT_TO_REPLACE = 4  # shorter texts would blank out ordinary words in raw provider data


def mask_codes(text: str) -> str:
    """`Код для входа: 834622` -> `Код для входа: ••••••` (length kept, every digit hidden)."""
    return _DIGIT.sub(MASK, text or "")


def personal_replacements(phone: str, text: str) -> dict[str, str]:
    """What a viewer without the "see the text" permission must not read in raw provider data:
    the recipient (providers echo it, with or without "+") and the message (some echo the body)."""
    masked_phone = phone_mask(phone)
    replacements = {phone: masked_phone, phone.lstrip("+"): masked_phone.lstrip("+")}
    if text and len(text) >= MIN_TEXT_TO_REPLACE:
        replacements[text] = mask_codes(text)
    return replacements
