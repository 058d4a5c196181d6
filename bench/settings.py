"""Settings of the benchmark stack only (`make bench`): production settings plus a baseline view.

Never used by a deployment: `bench.urls` adds `/bench/baseline`, a view that does the least any
gateway must do for a request (one HS256 verification, one INSERT), to compare the real endpoint with.
"""

from smsgate.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
