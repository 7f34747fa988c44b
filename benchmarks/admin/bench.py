#!/usr/bin/env python3
"""make bench-admin: first paint of the admin dashboard and what its refresh costs an idle node.

Started by benchmarks/admin/run (which builds the release products and installs chromium); see README.md.
Uses only the Python standard library: a minimal WebSocket client drives Chromium over the DevTools protocol.
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client-masked, no extensions."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the connection during the handshake")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"DevTools refused the WebSocket: {head[:200]!r}")

    def send(self, text):
        data = text.encode()
        header = bytearray([0x81])
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("DevTools closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            if b1 & 0x80:
                self._read(4)
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise EOFError("DevTools closed the connection")
            if opcode in (9, 10):
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()


class DevTools:
    """One browser-level DevTools connection; page commands go to a session (flattened targets)."""

    def __init__(self, url):
        self.ws = WebSocket(url)
        self.next_id = 0

    def call(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv())
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Network.enable", {}, session)
        self.call("Network.setCacheDisabled", {"cacheDisabled": True}, session)
        self.call("Page.navigate", {"url": url}, session)
        return target, session

    def evaluate(self, expression, session):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")

    def close(self, target):
        self.call("Target.closeTarget", {"targetId": target})


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def operation(admin, plugin, op):
    status, data = request(admin, "POST", f"/v1/plugins/{plugin}/operations/{op}", b'{"args":[]}',
                           {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"{plugin} {op}: HTTP {status}: {data[:300]!r}")
    return json.loads(data)["result"]


def start_node(products, work):
    manifests = os.path.join(work, "manifests")
    os.makedirs(manifests)
    # An idle node: storage, registry and the three protocols; no heartbeat source or console sink.
    for name in ["raft-log", "memory-storage", "standalone-registry", "tcp-protocol", "http-protocol",
                 "grpc-protocol"]:
        shutil.copy(os.path.join(ROOT, "plugin-manifests", name + ".yaml"), manifests)
    node_file = os.path.join(work, "plexus.yaml")
    with open(node_file, "w") as f:
        f.write("plugins:\n  config:\n    tcp-protocol: {port: 0}\n    http-protocol: {port: 0}\n"
                "    grpc-protocol: {port: 0}\n")
    out = open(os.path.join(work, "node.out"), "w")
    err = open(os.path.join(work, "node.err"), "w")
    process = subprocess.Popen(
        [os.path.join(products, "plexus"), "serve", "--config", node_file, "--manifests", manifests,
         "--plugin-path", products, "--admin-port", "0", "--data-dir", os.path.join(work, "data"),
         "--log-level", "warning"], stdout=out, stderr=err, cwd=work)
    prefix = "plexus: admin endpoint http://127.0.0.1:"
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(os.path.join(work, "node.out")) as f:
            for line in f:
                if line.startswith(prefix):
                    return process, int(line[len(prefix):].strip())
        if process.poll() is not None:
            raise RuntimeError("the node exited: " + open(os.path.join(work, "node.err")).read()[-2000:])
        time.sleep(0.1)
    raise RuntimeError("the node did not announce its admin endpoint within 60 s")


def populate(products, admin, topics, groups):
    http_port = int(operation(admin, "http-protocol", "port"))
    tcp_port = int(operation(admin, "tcp-protocol", "port"))
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    for i in range(topics):
        connection.request("POST", f"/topics/bench-{i:04d}", body=b'{"n":%d}' % i, headers={
            "ce-id": f"e-{i}", "ce-source": "/bench-admin", "ce-specversion": "1.0", "ce-type": "bench",
            "Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status // 100 != 2:
            raise RuntimeError(f"publish to bench-{i:04d}: HTTP {response.status}")
    connection.close()
    # One group per topic for the first `groups` topics, each reading and acknowledging its one event.
    running = []
    for i in range(groups):
        running.append(subprocess.Popen(
            [os.path.join(products, "plexus"), "sub", f"bench-{i:04d}", "--group", f"group-{i:03d}", "--from",
             "earliest", "--count", "1", "--server", f"127.0.0.1:{tcp_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        if len(running) >= 4:
            wait_for(running.pop(0))
    for p in running:
        wait_for(p)


def wait_for(process):
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise RuntimeError("plexus sub did not receive its event within 60 s")
    if process.returncode != 0:
        raise RuntimeError(f"plexus sub failed: {err.decode()[-500:]}")


def start_chromium(work):
    profile = os.path.join(work, "chromium-profile")
    process = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "chromium.err"), "w"))
    active = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(active):
            lines = open(active).read().split("\n")
            if len(lines) >= 2 and lines[1]:
                return process, DevTools(f"ws://127.0.0.1:{lines[0]}{lines[1]}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("chromium did not open its DevTools port within 60 s")


def first_paint(devtools, url):
    target, session = devtools.open(url)
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            value = devtools.evaluate("document.body && document.body.dataset.firstRender || ''", session)
            if value:
                paints = devtools.evaluate(
                    "JSON.stringify(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]))", session)
                rows = devtools.evaluate("document.querySelectorAll('#topics-body tr').length", session)
                return float(value), dict(json.loads(paints or "[]")), rows
            time.sleep(0.01)
        raise RuntimeError("the dashboard did not render within 30 s")
    finally:
        devtools.close(target)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-admin-", dir=os.path.abspath(args.out))
    node, admin = start_node(os.path.abspath(args.products), work)
    browser = None
    try:
        t0 = time.time()
        populate(os.path.abspath(args.products), admin, args.topics, args.groups)
        print(f"bench-admin: node up (admin port {admin}); {args.topics} topics and {args.groups} groups made in "
              f"{time.time() - t0:.1f} s")
        sizes = {}
        for path in ["/", "/v1/plugins", "/v1/ready", "/v1/topics", "/v1/groups", "/metrics"]:
            status, data = request(admin, "GET", path)
            sizes[path] = (status, len(data))
        status, data = request(admin, "POST", "/v1/plugins/raft-log/operations/status", b'{"args":[]}',
                               {"Content-Type": "application/json"})
        sizes["raft-log status"] = (status, len(data))
        missing = [p for p in ["/v1/topics", "/v1/groups"] if sizes[p][0] == 404]
        if not missing:
            listed = len(json.loads(request(admin, "GET", "/v1/topics")[1])["topics"])
            if listed < args.topics:
                raise RuntimeError(f"GET /v1/topics lists {listed} topics, expected {args.topics}")
        browser, devtools = start_chromium(work)
        url = f"http://127.0.0.1:{admin}/"
        first_paint(devtools, url)  # warm-up: the browser's own first start, not the page's
        paints, contentful, rows = [], [], 0
        for _ in range(args.runs):
            rendered, entries, rows = first_paint(devtools, url)
            paints.append(rendered)
            contentful.append(entries.get("first-contentful-paint", float("nan")))
        cpu_idle, cpu_open, ticks = [], [], []
        for _ in range(args.runs):
            before = cpu_seconds(node.pid)
            time.sleep(args.seconds)
            cpu_idle.append((cpu_seconds(node.pid) - before) / args.seconds * 100)
            target, session = devtools.open(url)
            time.sleep(3)
            start_ticks = devtools.evaluate("state.ticks", session)
            before = cpu_seconds(node.pid)
            time.sleep(args.seconds)
            cpu_open.append((cpu_seconds(node.pid) - before) / args.seconds * 100)
            ticks.append(((devtools.evaluate("state.ticks", session) or 0) - (start_ticks or 0)) / args.seconds)
            devtools.close(target)
        cost = [o - i for o, i in zip(cpu_open, cpu_idle)]
        load = os.getloadavg()
        paint = statistics.median(paints)
        median_cost = statistics.median(cost)
        print()
        build = "release build" if os.path.basename(os.path.normpath(args.products)) == "release" else args.products
        print(f"bench-admin: idle node, {build}, {args.topics} topics (one event each, default storage "
              f"raft-log) and {args.groups} consumer groups; medians of {args.runs} runs; loopback; "
              f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end")
        for path, (status, size) in sizes.items():
            print(f"  {path if ' ' in path else 'GET ' + path:<16} {status}  {size:>9,} bytes")
        if missing:
            print(f"  NOT TAKEN: {', '.join(missing)} answered 404 on this node, so the page showed no topic or group "
                  f"table: the figures below are for plugins only, not for {args.topics} topics and {args.groups} "
                  "groups")
        print(f"  first paint with every table filled: {paint:.0f} ms (runs: "
              f"{', '.join(f'{p:.0f}' for p in paints)}); target <= 1000 ms; ratio {paint / 1000:.2f}"
              f"  [{rows} topic rows]")
        print(f"  first contentful paint: {statistics.median(contentful):.0f} ms")
        print(f"  node CPU, idle: {statistics.median(cpu_idle):.2f}% of one core; with the dashboard open: "
              f"{statistics.median(cpu_open):.2f}% ({statistics.median(ticks):.2f} refreshes/s)")
        print(f"  the dashboard's refresh costs the node {median_cost:.2f}% of one core (runs: "
              f"{', '.join(f'{c:.2f}' for c in cost)}); target <= 2%; ratio {median_cost / 2:.2f}")
        print("  Plexus batches nothing here: every refresh is 4 requests (ready, plugins, topics, groups), plus "
              "health every 10th and metrics and raft-log status every 30th; no response is cached")
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"topics": args.topics, "groups": args.groups, "runs": args.runs, "seconds": args.seconds,
                       "sizes": sizes, "missing": missing, "firstPaintMs": paints, "firstContentfulPaintMs": contentful,
                       "cpuIdlePercent": cpu_idle, "cpuOpenPercent": cpu_open, "refreshesPerSecond": ticks,
                       "costPercent": cost, "loadAverage": load}, f, indent=2)
    finally:
        if browser:
            browser.kill()
            browser.wait()
        node.terminate()
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
