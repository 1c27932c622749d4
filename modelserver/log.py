"""Every log line names its request: the X-Request-ID that Heroku's router sets (django-guid
reads it, or makes one), or "-" outside a request."""

import logging

from django_guid import get_guid


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = get_guid() or "-"
        return True
