"""The S3 sink's boto3 client connects only to the address Tessera vetted, not to whatever the endpoint's
name resolves to later (DNS rebinding), while TLS is still checked and SigV4 still signs the name.

S3 is moto's server (``tests.moto_s3``, the STAND-IN for Amazon S3), over HTTP and over HTTPS with a
self-signed certificate for the name. DNS is a STAND-IN too: the name used exists nowhere, so
``socket.getaddrinfo`` is wrapped to answer it with 127.0.0.1 (where moto listens, allowed by the
outbound rules) at the first lookup and with 127.0.0.2 afterwards, where a trap listener on the same port
counts every connection it gets (127.0.0.2 is loopback outside the allowlist: refused). Every other name
resolves as usual."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import botocore.exceptions
import pytest

from authz.audit import admin_event
from authz.errors import OutboundRefused
from authz.forward import Forwarder, ForwarderSettings, forward_event
from authz.forward._config import SinkSpec, build_sink
from authz.forward._s3 import s3_client
from authz.outbound import OutboundPolicy
from authz.storage.sqlite import SQLiteStore
from tests.moto_s3 import moto_server
from tests.tls import self_signed

# A cluster-local name, as an in-cluster MinIO would have (moto takes other dotted names for
# virtual-hosted bucket addresses).
NAME = "minio.tessera.svc.cluster.local"
POLICY = OutboundPolicy.build(["127.0.0.1"])  # 127.0.0.2 stays refused (loopback, not allowed)
T0 = 1_700_000_000_000
KEYS = {"access_key_id": "test", "secret_access_key": "test"}


class Trap:
    """Listens on 127.0.0.2:``port`` and counts the connections it accepts (the refused address)."""

    def __init__(self, port: int):
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.2", port))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


def fake_dns(monkeypatch, answer: Callable[[int], str]) -> list[str]:
    """``NAME`` resolves to ``answer(n)`` at its n-th lookup (from 0); returns the answers given."""
    real = socket.getaddrinfo
    answers: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != NAME:
            return real(host, port, *args, **kwargs)
        address = answer(len(answers))
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.fixture
def rebinding_dns(monkeypatch) -> list[str]:
    """The name resolves to 127.0.0.1 once, then to 127.0.0.2."""
    return fake_dns(monkeypatch, lambda n: "127.0.0.1" if n == 0 else "127.0.0.2")


@pytest.fixture
def steady_dns(monkeypatch) -> list[str]:
    """The name always resolves to 127.0.0.1."""
    return fake_dns(monkeypatch, lambda n: "127.0.0.1")


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    with moto_server() as port:
        yield port


@pytest.fixture
def trap(moto_port: int) -> Iterator[Trap]:
    t = Trap(moto_port)
    yield t
    t.close()


def direct(port: int, scheme: str = "http", verify: bool | str | None = None):
    """An unpinned client straight to moto at 127.0.0.1, to read back what arrived."""
    return s3_client(region="eu-west-1", endpoint_url=f"{scheme}://127.0.0.1:{port}", verify=verify, **KEYS)


def test_requests_go_to_the_vetted_address_and_a_rebound_answer_is_refused(moto_port, trap, rebinding_dns):
    pinned = s3_client(
        region="eu-west-1",
        endpoint_url=f"http://{NAME}:{moto_port}",
        outbound=POLICY,
        purpose="S3 sink t",
        **KEYS,
    )
    try:
        pinned.create_bucket(Bucket="pinned", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        # One lookup, by the vetting; the connection did not resolve the name again (it would have got
        # 127.0.0.2 and reached the trap).
        assert rebinding_dns == ["127.0.0.1"]
        # The next request is vetted afresh: the name now answers a refused address, so it is refused
        # before any connection.
        with pytest.raises(OutboundRefused, match=r"S3 sink t .*127\.0\.0\.2 is a loopback address"):
            pinned.put_object(Bucket="pinned", Key="k", Body=b"event")
    finally:
        pinned.close()
    assert rebinding_dns == ["127.0.0.1", "127.0.0.2"]
    assert trap.connections == 0
    reader = direct(moto_port)
    assert reader.head_bucket(Bucket="pinned")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert reader.list_objects_v2(Bucket="pinned").get("KeyCount") == 0
    reader.close()


def test_without_pinning_the_same_dns_reaches_the_refused_address(moto_port, trap, rebinding_dns):
    """The gap the pinning closes, shown on a plain boto3 client: vet by name, then let boto3 connect."""
    from authz.outbound import vet_host_sync

    plain = s3_client(region="eu-west-1", endpoint_url=f"http://{NAME}:{moto_port}", **KEYS)
    try:
        assert vet_host_sync(POLICY, NAME, moto_port, "S3 sink") == "127.0.0.1"
        with pytest.raises(botocore.exceptions.BotoCoreError):
            plain.put_object(Bucket="pinned", Key="k", Body=b"event")  # the trap closes the connection
    finally:
        plain.close()
    assert trap.connections >= 1


def sink_spec(port: int, bucket: str) -> SinkSpec:
    options = {"bucket": bucket, "region": "eu-west-1", "endpoint_url": f"http://{NAME}:{port}"}
    options |= {"access_key_env": "S3_KEY_ID", "secret_env": "S3_SECRET"}
    return SinkSpec("s3", "s3", options, ForwarderSettings(batch_size=10))


ENV = {"S3_KEY_ID": "test", "S3_SECRET": "test"}


async def test_the_sink_the_forwarder_builds_delivers_through_the_pinned_client(
    tmp_path, moto_port, steady_dns
):
    reader = direct(moto_port)
    reader.create_bucket(Bucket="audit", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    store = SQLiteStore(tmp_path / "t.db")
    await store.append_events(
        [("acme", admin_event("acme", "alice", "tenant.update", f"t:{i}", time_ms=T0)) for i in range(3)]
    )
    sink = build_sink(sink_spec(moto_port, "audit"), ENV, lambda: None, POLICY)
    try:
        assert await Forwarder(store, sink, ForwarderSettings(batch_size=10)).pass_once()
        assert (await store.get_forwarder_cursor("acme", "s3")).seq == 3
    finally:
        await sink.aclose()
        await store.close()
    assert reader.list_objects_v2(Bucket="audit")["KeyCount"] == 1  # one object, signed by the name
    reader.close()
    # Two lookups, both by the vetting (the batch's and the request's), none by a connection.
    assert steady_dns == ["127.0.0.1", "127.0.0.1"]


async def test_the_sink_refuses_a_batch_once_the_name_rebinds(tmp_path, moto_port, trap, rebinding_dns):
    reader = direct(moto_port)
    reader.create_bucket(Bucket="audit-rebind", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    store = SQLiteStore(tmp_path / "t.db")
    await store.append_events([("acme", admin_event("acme", "alice", "tenant.update", "t:1", time_ms=T0))])
    sink = build_sink(sink_spec(moto_port, "audit-rebind"), ENV, lambda: None, POLICY)
    try:
        batch = [forward_event(r) async for r in store.iter_events("acme")]
        # The batch's vet got 127.0.0.1, the request's own vet 127.0.0.2: refused, nothing connected.
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.2"):
            await sink.send(batch)
    finally:
        await sink.aclose()
        await store.close()
    assert rebinding_dns == ["127.0.0.1", "127.0.0.2"]
    assert trap.connections == 0
    assert reader.list_objects_v2(Bucket="audit-rebind")["KeyCount"] == 0
    reader.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the reader
def test_https_keeps_the_name_for_the_certificate_while_connecting_to_the_vetted_address(
    tmp_path, steady_dns
):
    cert, key = self_signed(tmp_path, NAME)
    with moto_server(tls=(cert, key)) as port:
        pinned = s3_client(
            region="eu-west-1", endpoint_url=f"https://{NAME}:{port}", outbound=POLICY, verify=cert, **KEYS
        )
        try:
            pinned.create_bucket(Bucket="tls", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            pinned.put_object(Bucket="tls", Key="k", Body=b"event")
            assert pinned.get_object(Bucket="tls", Key="k")["Body"].read() == b"event"
        finally:
            pinned.close()
        # Every lookup was a vetting (one per request); no connection resolved the name itself.
        assert steady_dns == ["127.0.0.1"] * 3
        reader = direct(port, "https", verify=False)  # the certificate names NAME, not 127.0.0.1
        assert reader.get_object(Bucket="tls", Key="k")["Body"].read() == b"event"
        reader.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the reader
def test_https_to_a_server_whose_certificate_names_another_host_fails(tmp_path, steady_dns):
    cert, key = self_signed(tmp_path, "someone-else.test")
    with moto_server(tls=(cert, key)) as port:
        pinned = s3_client(
            region="eu-west-1", endpoint_url=f"https://{NAME}:{port}", outbound=POLICY, verify=cert, **KEYS
        )
        try:
            with pytest.raises(botocore.exceptions.SSLError):
                pinned.create_bucket(
                    Bucket="tls", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
                )
        finally:
            pinned.close()
        reader = direct(port, "https", verify=False)
        assert reader.list_buckets()["Buckets"] == []  # nothing was sent over that connection
        reader.close()
