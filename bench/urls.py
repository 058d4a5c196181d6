"""The production URLs plus the benchmark's baseline view (see bench/settings.py)."""

from django.urls import path

from smsgate.urls import urlpatterns as production_urlpatterns

from .views import baseline

urlpatterns = [path("bench/baseline", baseline, name="bench-baseline"), *production_urlpatterns]
