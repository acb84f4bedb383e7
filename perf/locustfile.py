"""A realistic traffic mix for portside, for locust (https://locust.io).

Against the demo (`make run` in another terminal: whoami-1 and whoami-2 behind
http://127.0.0.1:8000, routed by Host whoami.localhost):

    .venv/bin/locust -f perf/locustfile.py --headless -u 50 -r 10 -t 30s \
        --host http://127.0.0.1:8000 --csv perf/results/locust

The mix, by weight: page views (40%), small API reads (25%), 64 KiB downloads
(10%), JSON API writes of about 0.8 KiB (15%), 256 KiB uploads (5%) and slow
requests that the backend answers after 0.2-1 s (5%). Users pause 0.1-1 s
between requests, like people and the scripts they run. The whoami backend
echoes POST bodies, so each answer is checked for the body it was sent.
PORTSIDE_HOST changes the Host header (default whoami.localhost).
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, between, task

HOST_HEADER = os.environ.get("PORTSIDE_HOST", "whoami.localhost")
UPLOAD = os.urandom(128 * 1024).hex().encode()  # 256 KiB, made once


class Visitor(FastHttpUser):
    """One user of the sites behind portside."""

    wait_time = between(0.1, 1.0)
    # The demo routes by Host; the URL given with --host is just where portside listens.
    default_headers = {"Host": HOST_HEADER}

    @task(40)
    def page(self) -> None:
        self.client.get(random.choice(["/", "/index.html", "/about", "/blog/2024/hello"]))

    @task(25)
    def api_read(self) -> None:
        self.client.get(f"/api/items/{random.randint(1, 1000)}", name="/api/items/[id]")

    @task(10)
    def download(self) -> None:
        with self.client.get("/data?size=65536", catch_response=True) as response:
            if len(response.content or b"") != 65536:
                response.failure(f"expected 65536 bytes, got {len(response.content or b'')}")

    @task(15)
    def api_write(self) -> None:
        order = {"customer": random.randint(1, 10**6), "lines": [{"sku": i} for i in range(60)]}
        body = json.dumps(order).encode()
        with self.client.post(
            "/api/orders",
            data=body,
            headers={"Content-Type": "application/json"},
            catch_response=True,
        ) as response:
            if body not in (response.content or b""):
                response.failure("the backend did not receive the whole body")

    @task(5)
    def upload(self) -> None:
        with self.client.post(
            "/upload",
            data=UPLOAD,
            headers={"Content-Type": "application/octet-stream"},
            catch_response=True,
        ) as response:
            if not (response.content or b"").endswith(UPLOAD):
                response.failure("the backend did not receive the whole upload")

    @task(5)
    def slow(self) -> None:
        delay = random.choice([0.2, 0.5, 1.0])
        self.client.get(f"/report?sleep={delay}", name="/report?sleep=[0.2-1]")
