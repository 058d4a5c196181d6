"""What people other than the recipient may see of a message text."""

import re

# Login codes are runs of digits; three or more in a row are hidden, shorter numbers rarely matter.
_CODE = re.compile(r"\d{3,}")


def text_mask_codes(text: str) -> str:
    """`Код для входа: 834622` -> `Код для входа: ******` (length kept, digits hidden)."""
    return _CODE.sub(lambda match: "*" * len(match.group()), text or "")
