"""gRPC interop checks against a running Plexus node, with stubs that grpcio-tools generates from the
project's .proto files (protos/) at run time: a client this project did not write.

    python grpc_interop.py PORT STUBS_DIR CHECK...     (CHECK: publish, subscribe, killed, requestreply,
                                                         heartbeat, badinput; "all" runs every one)

Each passing check prints "ok CHECK"; a failing one raises (exit status 1).
"""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOS = os.path.normpath(os.path.join(HERE, "..", "..", "..", "protos"))


def generate(stubs):
    """Generates the Python stubs of protos/ into `stubs` with grpcio-tools' protoc."""
    import grpc_tools
    from grpc_tools import protoc

    os.makedirs(stubs, exist_ok=True)
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = sorted(os.path.join(PROTOS, f) for f in os.listdir(PROTOS) if f.endswith(".proto"))
    args = ["protoc", "-I", PROTOS, "-I", include, "--python_out", stubs, "--grpc_python_out", stubs] + files
    if protoc.main(args) != 0:
        raise SystemExit("grpcio-tools could not compile protos/")
    sys.path.insert(0, stubs)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


class Node:
    def __init__(self, port):
        import grpc

        self.grpc = grpc
        import cloudevents_pb2
        import eventmesh_pb2
        import eventmesh_pb2_grpc
        import plexus_pb2
        import plexus_pb2_grpc

        self.ce = cloudevents_pb2
        self.em = eventmesh_pb2
        self.px = plexus_pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.publisher = eventmesh_pb2_grpc.PublisherServiceStub(self.channel)
        self.consumer = eventmesh_pb2_grpc.ConsumerServiceStub(self.channel)
        self.heartbeat = eventmesh_pb2_grpc.HeartbeatServiceStub(self.channel)
        self.plexus = plexus_pb2_grpc.PlexusStub(self.channel)
        self.port = port

    # EventMesh events: the topic in subject, identity attributes, everything as ce_string.
    def em_event(self, topic, text, **attributes):
        event = self.em.CloudEvent(
            id=attributes.pop("id", str(uuid.uuid4())), source="/interop/python", spec_version="1.0",
            type="org.example.interop", text_data=text)
        identity = {"env": "test", "idc": "idc1", "sys": "1234", "pid": str(os.getpid()), "ip": "127.0.0.1",
                    "language": "PYTHON", "producergroup": "interop-producers", "subject": topic,
                    "datacontenttype": "text/plain"}
        identity.update(attributes)
        for key, value in identity.items():
            if value is not None:
                event.attributes[key].ce_string = value
        return event

    def px_event(self, text, id=None):
        event = self.ce.CloudEvent(
            id=id or str(uuid.uuid4()), source="/interop/python", spec_version="1.0", type="org.example.interop",
            text_data=text)
        event.attributes["datacontenttype"].ce_string = "text/plain"
        return event

    def status(self, event):
        return event.attributes["statuscode"].ce_string


def trailing_status(error):
    return dict(error.trailing_metadata() or ()).get("statuscode")


def check_publish(node):
    topic = "grpc-interop-publish"
    response = node.publisher.publish(node.em_event(topic, "one"), timeout=10)
    check(node.status(response) == "0", f"publish: statuscode {node.status(response)}")
    check(response.attributes["responsemessage"].ce_string == "success", "publish: responsemessage")
    check(response.attributes["time"].ce_string != "", "publish: no time attribute")
    batch = node.em.CloudEventBatch(events=[node.em_event(topic, f"batch-{i}") for i in range(3)])
    response = node.publisher.batchPublish(batch, timeout=10)
    check(node.status(response) == "0", f"batchPublish: statuscode {node.status(response)}")
    node.publisher.publishOneWay(node.em_event(topic, "one-way"), timeout=10)
    node.publisher.batchPublishOneWay(node.em.CloudEventBatch(events=[node.em_event(topic, "one-way-batch")]),
                                      timeout=10)
    ack = node.plexus.Publish(node.px.PublishRequest(topic=topic, events=[node.px_event("a"), node.px_event("b")],
                                                     sequence=7), timeout=10)
    check(ack.code == 0 and ack.count == 2 and ack.sequence == 7, f"Publish: {ack}")

    def requests():
        for i in range(20):
            yield node.px.PublishRequest(topic=topic, events=[node.px_event(f"s{i}")], sequence=i)

    acks = list(node.plexus.PublishStream(requests(), timeout=10))
    check(sorted(a.sequence for a in acks) == list(range(20)), f"PublishStream acks: {[a.sequence for a in acks]}")
    check(all(a.code == 0 and a.count == 1 for a in acks), "PublishStream: a failed ack")
    offsets = sorted(a.first_offset for a in acks)
    check(len(set(offsets)) == 20, "PublishStream: offsets repeat")
    # Everything published so far is in storage: 1 + 3 + 1 + 1 + 2 + 20 (one-way ones are durable by now
    # or soon; read them back through Plexus Subscribe from the earliest offset).
    got = read_topic(node, topic, 28)
    texts = sorted(got)
    for expected in ["one", "batch-0", "batch-1", "batch-2", "one-way", "one-way-batch", "a", "b", "s0", "s19"]:
        check(expected in texts, f"{expected} not read back from {topic}: {texts}")
    print("ok publish", flush=True)


def read_topic(node, topic, count, group=None, timeout=10):
    """Reads `count` events of `topic` from the earliest offset with Plexus Subscribe, acking each."""
    acks = queue.Queue()
    sub = node.px.Subscription(topic=topic, group=group or f"reader-{uuid.uuid4()}",
                               start=node.px.Subscription.EARLIEST, credits=64)

    def requests():
        yield node.px.SubscribeRequest(subscription=sub)
        while True:
            item = acks.get()
            if item is None:
                return
            yield node.px.SubscribeRequest(ack=node.px.Ack(delivery_ids=[item]))

    call = node.plexus.Subscribe(requests(), timeout=timeout)
    texts = []
    try:
        for response in call:
            if response.HasField("subscribed"):
                continue
            texts.append(response.delivery.event.text_data)
            acks.put(response.delivery.delivery_id)
            if len(texts) >= count:
                break
    finally:
        acks.put(None)
        call.cancel()
    check(len(texts) >= count, f"read {len(texts)} of {count} events from {topic}")
    return texts


def check_subscribe(node):
    """Plexus Subscribe: deliveries arrive, are acked, and are not redelivered; a nack is redelivered."""
    topic = "grpc-interop-subscribe"
    acks = queue.Queue()
    sub = node.px.Subscription(topic=topic, group="interop-sub", credits=8, start=node.px.Subscription.LATEST)

    def requests():
        yield node.px.SubscribeRequest(subscription=sub)
        while True:
            item = acks.get()
            if item is None:
                return
            yield item

    call = node.plexus.Subscribe(requests(), timeout=20)
    first = next(call)
    check(first.HasField("subscribed"), f"the first response is not 'subscribed': {first}")
    for i in range(10):
        node.plexus.Publish(node.px.PublishRequest(topic=topic, events=[node.px_event(f"e{i}", id=f"sub-{i}")]),
                            timeout=10)
    seen = {}
    nacked = False
    for response in call:
        delivery = response.delivery
        event_id = delivery.event.id
        if event_id == "sub-3" and not nacked:
            nacked = True
            acks.put(node.px.SubscribeRequest(nack=node.px.Nack(delivery_id=delivery.delivery_id, reason="again")))
            continue
        seen[event_id] = delivery.attempt
        acks.put(node.px.SubscribeRequest(ack=node.px.Ack(delivery_ids=[delivery.delivery_id])))
        if len(seen) == 10:
            break
    acks.put(None)
    call.cancel()
    check(sorted(seen) == sorted(f"sub-{i}" for i in range(10)), f"delivered: {sorted(seen)}")
    check(seen["sub-3"] >= 2, f"the nacked event came back with attempt {seen['sub-3']}")
    print("ok subscribe", flush=True)


def em_subscription(node, topic, group):
    items = json.dumps([{"topic": topic, "mode": "CLUSTERING", "type": "ASYNC"}])
    return node.em_event(topic, items, consumergroup=group, producergroup=None)


def hold(port, stubs, topic, group):
    """A consumer that receives and never acknowledges: prints each event id, until it is killed."""
    generate(stubs)
    node = Node(port)
    outgoing = queue.Queue()

    def requests():
        yield em_subscription(node, topic, group)
        while True:
            outgoing.get()

    for event in node.consumer.subscribeStream(requests()):
        if event.attributes["statuscode"].ce_string:
            print("subscribed", flush=True)
            continue
        print(event.id, flush=True)


def check_killed(port, stubs, node):
    """Two members of one group on EventMesh subscribeStream; one is killed (SIGKILL) holding unacknowledged
    events; every event still reaches the other member."""
    topic = "grpc-interop-killed"
    group = "interop-killed"
    victim = subprocess.Popen([sys.executable, __file__, str(port), stubs, "hold", topic, group],
                              stdout=subprocess.PIPE, text=True)
    check(victim.stdout.readline().strip() == "subscribed", "the victim did not subscribe")
    received = {}
    ready = threading.Event()
    done = threading.Event()
    outgoing = queue.Queue()

    def requests():
        yield em_subscription(node, topic, group)
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    call = node.consumer.subscribeStream(requests(), timeout=30)

    def survivor():
        for event in call:
            if event.attributes["statuscode"].ce_string:
                ready.set()
                continue
            received[event.id] = event.attributes["attempt"].ce_string
            ack = node.em_event(topic, "", ackid=event.attributes["deliveryid"].ce_string)
            outgoing.put(ack)
            if len(received) == 40:
                done.set()
                return

    thread = threading.Thread(target=survivor, daemon=True)
    thread.start()
    check(ready.wait(10), "the survivor did not subscribe")
    ids = [f"killed-{i}" for i in range(40)]
    for event_id in ids:
        node.publisher.publish(node.em_event(topic, event_id, id=event_id), timeout=10)
    held = []
    while len(held) < 1:
        line = victim.stdout.readline().strip()
        check(line != "", "the victim ended before receiving anything")
        held.append(line)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    check(done.wait(20), f"the survivor got {len(received)} of 40; missing {sorted(set(ids) - set(received))}")
    outgoing.put(None)
    call.cancel()
    check(held[0] in received, f"{held[0]}, held by the killed consumer, never reached the survivor")
    print(f"ok killed (the killed consumer held {held[0]}; the survivor got it, attempt {received[held[0]]})",
          flush=True)


def stall(port, stubs, topic, credits):
    """A consumer that subscribes on Plexus Subscribe and then never reads its stream: prints "subscribed"
    after the first response, then sleeps until it is killed."""
    generate(stubs)
    node = Node(port)
    sub = node.px.Subscription(topic=topic, group="interop-stall", credits=int(credits),
                               start=node.px.Subscription.EARLIEST)

    def requests():
        yield node.px.SubscribeRequest(subscription=sub)
        threading.Event().wait()

    call = node.plexus.Subscribe(requests())
    first = next(call)
    check(first.HasField("subscribed"), f"the first response is not 'subscribed': {first}")
    print("subscribed", flush=True)
    threading.Event().wait()


def check_unknowntopic(node):
    """With topics.autoCreate off, a topic no binding names is NOT_FOUND on every path, naming the topic; a
    bound topic still works."""
    grpc = node.grpc
    topic = "grpc-interop-nowhere"

    def expect_not_found(call, what):
        try:
            call()
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.NOT_FOUND, f"{what}: {error.code()} ({error.details()})")
            check(topic in (error.details() or ""), f"{what}: the details do not name the topic: {error.details()}")
            return error
        raise AssertionError(f"{what}: accepted")

    expect_not_found(lambda: node.plexus.Publish(
        node.px.PublishRequest(topic=topic, events=[node.px_event("x")]), timeout=5), "Plexus Publish")
    error = expect_not_found(lambda: node.publisher.publish(node.em_event(topic, "x"), timeout=5),
                             "EventMesh publish")
    check(trailing_status(error) not in (None, "0"), f"EventMesh publish: statuscode {trailing_status(error)}")
    sub = node.px.Subscription(topic=topic, group="g", credits=8)
    expect_not_found(lambda: list(node.plexus.Subscribe(iter([node.px.SubscribeRequest(subscription=sub)]),
                                                        timeout=5)), "Plexus Subscribe")
    response = node.plexus.Publish(node.px.PublishRequest(topic="orders", events=[node.px_event("y")]), timeout=5)
    check(response.code == 0 and response.count == 1, f"a bound topic: {response}")
    print("ok unknowntopic", flush=True)


def check_requestreply(node):
    """A responder on subscribeStream answers requests by publishing to their replyto topic with their
    correlationid; requestReply returns that reply."""
    topic = "grpc-interop-rr"
    outgoing = queue.Queue()
    ready = threading.Event()

    def requests():
        yield em_subscription(node, topic, "interop-responders")
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    call = node.consumer.subscribeStream(requests(), timeout=30)

    def responder():
        try:
            for event in call:
                if event.attributes["statuscode"].ce_string:
                    ready.set()
                    continue
                outgoing.put(node.em_event(topic, "", ackid=event.attributes["deliveryid"].ce_string))
                reply = node.em_event(event.attributes["replyto"].ce_string, "pong:" + event.text_data,
                                      correlationid=event.attributes["correlationid"].ce_string)
                node.publisher.publish(reply, timeout=10)
        except node.grpc.RpcError:
            pass

    threading.Thread(target=responder, daemon=True).start()
    check(ready.wait(10), "the responder did not subscribe")
    reply = node.publisher.requestReply(node.em_event(topic, "ping", ttl="5000"), timeout=10)
    check(reply.text_data == "pong:ping", f"requestReply: {reply.text_data!r}")
    check(node.status(reply) == "0", f"requestReply: statuscode {node.status(reply)}")
    outgoing.put(None)
    call.cancel()
    print("ok requestreply", flush=True)


def check_heartbeat(node):
    beat = node.em_event("", "[]", consumergroup="interop-consumers", subject=None)
    response = node.heartbeat.heartbeat(beat, timeout=10)
    check(node.status(response) == "0", f"heartbeat: statuscode {node.status(response)}")
    try:
        node.heartbeat.heartbeat(node.em_event("", "[]", subject=None, producergroup=None), timeout=10)
        raise AssertionError("a heartbeat without a group was accepted")
    except node.grpc.RpcError as error:
        check(error.code() == node.grpc.StatusCode.INVALID_ARGUMENT, f"heartbeat without group: {error.code()}")
        check(trailing_status(error) == "6", f"heartbeat without group: statuscode {trailing_status(error)}")
    print("ok heartbeat", flush=True)


def expect_error(node, code, statuscode, call, what):
    try:
        call()
    except node.grpc.RpcError as error:
        check(error.code() == code, f"{what}: {error.code()} ({error.details()}), expected {code}")
        if statuscode is not None:
            check(trailing_status(error) == statuscode,
                  f"{what}: EventMesh statuscode {trailing_status(error)}, expected {statuscode}")
        return
    raise AssertionError(f"{what}: accepted")


def check_badinput(node):
    grpc = node.grpc
    topic = "grpc-interop-bad"
    # Missing required attributes.
    missing_id = node.em_event(topic, "x", id="")
    expect_error(node, grpc.StatusCode.INVALID_ARGUMENT, "6", lambda: node.publisher.publish(missing_id, timeout=5),
                 "publish without id")
    missing_topic = node.em_event("", "x", subject=None)
    expect_error(node, grpc.StatusCode.INVALID_ARGUMENT, "6",
                 lambda: node.publisher.publish(missing_topic, timeout=5), "publish without subject")
    bad = node.px_event("x")
    bad.type = ""
    expect_error(node, grpc.StatusCode.INVALID_ARGUMENT, None,
                 lambda: node.plexus.Publish(node.px.PublishRequest(topic=topic, events=[bad]), timeout=5),
                 "Publish without type")
    # Credentials in attributes are refused (they belong in the call's metadata).
    creds = node.em_event(topic, "x", username="alice", passwd="secret")
    expect_error(node, grpc.StatusCode.PERMISSION_DENIED, "6", lambda: node.publisher.publish(creds, timeout=5),
                 "publish with attribute credentials")
    # Oversized: the node under test accepts messages up to 64 KiB.
    big = node.em_event(topic, "x" * (200 * 1024))
    expect_error(node, grpc.StatusCode.RESOURCE_EXHAUSTED, None, lambda: node.publisher.publish(big, timeout=5),
                 "an oversized publish")
    # A webhook subscribe is not served on gRPC.
    expect_error(node, grpc.StatusCode.UNIMPLEMENTED, "17",
                 lambda: node.consumer.subscribe(em_subscription(node, topic, "g"), timeout=5), "webhook subscribe")
    # A subscribe stream whose first message is not a subscription.
    expect_error(node, grpc.StatusCode.FAILED_PRECONDITION, None,
                 lambda: list(node.plexus.Subscribe(iter([node.px.SubscribeRequest(ack=node.px.Ack(delivery_ids=[1]))]),
                                                    timeout=5)),
                 "Subscribe starting with an ack")
    # Deadline exceeded: a request nobody answers, with a short call deadline.
    expect_error(node, grpc.StatusCode.DEADLINE_EXCEEDED, None,
                 lambda: node.publisher.requestReply(node.em_event(topic + "-nobody", "?", ttl="60000"), timeout=0.5),
                 "requestReply past its deadline")
    # A cancelled call: a subscribe stream cancelled at once.
    stream = node.plexus.Subscribe(iter([node.px.SubscribeRequest(subscription=node.px.Subscription(topic=topic))]))
    stream.cancel()
    # Garbage on the port: the server drops that connection and goes on serving.
    for payload in [b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096)]:
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:
            raw.sendall(payload)
            raw.settimeout(5)
            try:
                while raw.recv(4096):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
    # None of it stalled the server.
    started = time.monotonic()
    response = node.publisher.publish(node.em_event(topic, "still serving"), timeout=5)
    check(node.status(response) == "0", "the server stopped serving after bad input")
    check(time.monotonic() - started < 5, "the server was slow after bad input")
    print("ok badinput", flush=True)


def check_httpprotobuf(node):
    """The HTTP plugin's structured mode in the CloudEvents protobuf format (PLEXUS_HTTP_PORT)."""
    import urllib.error
    import urllib.request

    port = int(os.environ["PLEXUS_HTTP_PORT"])
    topic = "http-protobuf"

    def post(body, content_type):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/topics/{topic}", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    event = node.px_event("proto body", id="http-pb-1")
    event.attributes["subject"].ce_string = "via-http"
    event.attributes["count"].ce_integer = 3
    status = post(event.SerializeToString(), "application/cloudevents+protobuf")
    check(200 <= status < 300, f"a protobuf structured event: HTTP {status}")
    batch = node.ce.CloudEventBatch(events=[node.px_event("b1", id="http-pb-2"), node.px_event("b2", id="http-pb-3")])
    status = post(batch.SerializeToString(), "application/cloudevents-batch+protobuf")
    check(200 <= status < 300, f"a protobuf batch: HTTP {status}")
    missing = node.px_event("x")
    missing.source = ""
    status = post(missing.SerializeToString(), "application/cloudevents+protobuf")
    check(status == 400, f"a protobuf event without source: HTTP {status}")
    status = post(b"\xff\xff\xff", "application/cloudevents+protobuf")
    check(status == 400, f"a body that is not protobuf: HTTP {status}")
    print("ok httpprotobuf", flush=True)


def main():
    port, stubs, checks = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if checks[:1] == ["hold"]:
        return hold(port, stubs, checks[1], checks[2])
    if checks[:1] == ["stall"]:
        return stall(port, stubs, checks[1], checks[2])
    generate(stubs)
    node = Node(port)
    if checks == ["all"]:
        checks = ["publish", "subscribe", "killed", "requestreply", "heartbeat", "badinput"]
    for name in checks:
        if name == "killed":
            check_killed(port, stubs, node)
        else:
            globals()["check_" + name](node)


if __name__ == "__main__":
    main()
