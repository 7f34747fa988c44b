#!/usr/bin/env python3
"""Interop between Plexus's HTTP protocol plugin and the CloudEvents Python SDK (PyPI `cloudevents`).

The SDK, which this project did not write, makes every event and every HTTP message here, and parses
every webhook delivery Plexus makes. The script:

1. starts a webhook sink (http.server) on a free loopback port that parses each request with the SDK;
2. creates two push subscriptions on TOPIC through Plexus's API, one delivering in binary mode and one in
   structured mode, both to that sink;
3. publishes events the SDK encodes in binary and in structured mode (JSON, bytes and text data,
   percent-encoded attributes, an extension, a time with fractional seconds) and checks each gets 202;
4. checks that an SDK-made CloudEvents 0.3 event is refused with 400 naming `specversion`;
5. waits for every event on both subscriptions and checks that each attribute and the data survived;
6. prints one JSON line per published event, {"id": …, "data": base64 of the bytes Plexus must store},
   for the Swift test to read the events back from storage and compare.

Usage: cloudevents_sdk.py PLEXUS_HTTP_PORT TOPIC. Exits 0 when every check passed, 1 otherwise.
"""
import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v03.event import CloudEvent as CloudEventV03
from cloudevents.core.v1.event import CloudEvent

PORT, TOPIC = int(sys.argv[1]), sys.argv[2]
BASE = f"http://127.0.0.1:{PORT}"
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def when():
    """A time with fractional seconds, in UTC (the SDK writes it with a Z)."""
    return datetime(2026, 11, 25, 10, 0, 1, 500000, tzinfo=timezone.utc)


# (mode, event, the bytes Plexus must store as the event's data)
JSON_DATA = {"message": "Hello, Plexus", "n": [1, 2.5, None], "nested": {"ü": True}}
EVENTS = [
    ("binary", CloudEvent(
        attributes={"id": "py-binary-json", "source": "/python%20sdk", "type": "com.example.py.json",
                    "datacontenttype": "application/json", "subject": 'ümlaut "quoted" 100%',
                    "time": when(), "pyext": "value with spaces"},
        data=JSON_DATA), json.dumps(JSON_DATA).encode()),
    ("binary", CloudEvent(
        attributes={"id": "py-binary-bytes", "source": "urn:python:sdk", "type": "com.example.py.bytes",
                    "datacontenttype": "application/octet-stream", "time": when()},
        data=bytes(range(256))), bytes(range(256))),
    ("structured", CloudEvent(
        attributes={"id": "py-structured-json", "source": "/python", "type": "com.example.py.json",
                    "datacontenttype": "application/json", "dataschema": "https://example.com/schema",
                    "time": when(), "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        data=JSON_DATA), json.dumps(JSON_DATA).encode()),
    ("structured", CloudEvent(
        attributes={"id": "py-structured-bytes", "source": "/python", "type": "com.example.py.bytes",
                    "time": when()},
        data=b"\x00\x01binary\xff"), b"\x00\x01binary\xff"),
    ("structured", CloudEvent(
        attributes={"id": "py-structured-text", "source": "/python", "type": "com.example.py.text",
                    "datacontenttype": "text/plain", "subject": "lines", "time": when()},
        data="plain text\nwith a second line and é"), "plain text\nwith a second line and é".encode()),
]

received = {}  # (path, id) -> event
received_lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Plexus's client pools connections

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = ce_http.from_http(ce_http.HTTPMessage(headers=headers, body=body), JSONFormat())
            with received_lock:
                received[(self.path, event.get_id())] = event
            self.send_response(202)
        except Exception as error:  # a delivery the SDK cannot parse fails the run
            failures.append(f"sink {self.path}: the SDK cannot parse a delivery: {error!r} {headers} {body!r}")
            self.send_response(400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def request(method, path, body=b"", headers=None):
    req = urllib.request.Request(BASE + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def main():
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}"

    for mode in ("binary", "structured"):
        status, body = request("POST", "/subscriptions", json.dumps(
            {"topic": TOPIC, "sink": f"{sink_url}/{mode}", "mode": mode, "start": "earliest"}).encode(),
            {"Content-Type": "application/json"})
        check(status == 201, f"creating the {mode} subscription: {status} {body!r}")

    for mode, event, _ in EVENTS:
        message = ce_http.to_binary_event(event) if mode == "binary" else ce_http.to_structured_event(event)
        status, body = request("POST", f"/topics/{TOPIC}", message.body, message.headers)
        check(status == 202, f"publishing {event.get_id()} in {mode} mode: {status} {body!r}")

    old = CloudEventV03(attributes={"id": "py-v03", "source": "/python", "type": "t"}, data={"a": 1})
    message = ce_http.to_structured_event(old)
    status, body = request("POST", f"/topics/{TOPIC}", message.body, message.headers)
    problem = json.loads(body or b"{}")
    check(status == 400 and problem.get("attribute") == "specversion",
          f"a CloudEvents 0.3 event must be refused naming specversion: {status} {body!r}")

    deadline = time.monotonic() + 20
    wanted = {(f"/{path}", event.get_id()) for _, event, _ in EVENTS for path in ("binary", "structured")}
    while time.monotonic() < deadline:
        with received_lock:
            if wanted <= received.keys():
                break
        time.sleep(0.05)
    for path in ("/binary", "/structured"):
        for _, event, _ in EVENTS:
            got = received.get((path, event.get_id()))
            if got is None:
                failures.append(f"{path}: {event.get_id()} was not delivered")
                continue
            check(got.get_attributes() == event.get_attributes(),
                  f"{path}: {event.get_id()} attributes changed: {got.get_attributes()} != {event.get_attributes()}")
            check(got.get_data() == event.get_data(),
                  f"{path}: {event.get_id()} data changed: {got.get_data()!r} != {event.get_data()!r}")
    sink.shutdown()

    for _, event, stored in EVENTS:
        print(json.dumps({"id": event.get_id(), "data": base64.b64encode(stored).decode()}))
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
