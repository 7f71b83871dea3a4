"""The WSGI application that gunicorn serves.

Once Django and the URLconf are loaded, everything in memory lives as long as the process.
`gc.freeze()` moves those objects out of the garbage collector's reach, so its full
collections scan only what requests create: without it each full collection walked
~140,000 long-lived objects and stalled one board request in seven by ~70 ms. It also keeps
the pages shared after gunicorn forks its workers (https://docs.python.org/3/library/gc.html#gc.freeze).

A full board holds ~10,000s of objects until its response is sent. With the default threshold
(a young collection every 700 new objects) the collector walked them again and again while they
were built, then once more in each older generation: ~5 ms of the board's ~63 ms of CPU. At
50,000 a request seldom sees a collection at all, and its objects are freed by reference counting
before one comes (bench/README.md); the cyclic garbage waiting for it is a few MB at most.
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
gc.set_threshold(50_000, *gc.get_threshold()[1:])
