"""The WSGI application that gunicorn serves.

Once Django and the URLconf are loaded, everything in memory lives as long as the process.
`gc.freeze()` moves those objects out of the garbage collector's reach, so its full
collections scan only what requests create: without it each full collection walked
~140,000 long-lived objects and stalled one board request in seven by ~70 ms. It also keeps
the pages shared after gunicorn forks its workers (https://docs.python.org/3/library/gc.html#gc.freeze).
"""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexo_portal.settings")

application = get_wsgi_application()
_ = get_resolver().url_patterns  # import every view now, not on the first request
gc.collect()  # what start-up left as garbage is freed, not frozen
gc.freeze()
