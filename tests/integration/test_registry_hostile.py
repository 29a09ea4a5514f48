"""A registry is hostile input: a fake registry on a loopback port serves
wrong bytes, lies about sizes, sends huge or unknown manifests, breaks off,
throttles, redirects to other schemes, and is interrupted mid-pull. Each
failure is one line naming the reference and the digest, exit 1 (130 when
interrupted), and leaves the store's index and layers as they were."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import run, tool
from registries import FakeRegistry, image_from_layout, send, send_range, servers, sha  # noqa: F401
from test_registry import Strata


@pytest.fixture
def image(workdir, base_tar):
    """The busybox base as a registry would serve it: manifest, media type, blobs."""
    src = Strata(workdir, "source")
    src("import", base_tar, "base:1")
    return image_from_layout(src.root, "base:1")


@pytest.fixture
def fake(image, servers):
    manifest, media_type, blobs = image
    return servers.add(FakeRegistry("hostile/app", "1", manifest, media_type, blobs))


@pytest.fixture
def strata(workdir):
    return Strata(workdir, "store")


def layer_digest(fake):
    return json.loads(fake.manifest)["layers"][0]["digest"]


def config_digest(fake):
    return json.loads(fake.manifest)["config"]["digest"]


def partials(strata):
    return [n for n in os.listdir(os.path.join(strata.root, "tmp")) if n.startswith("pull-")]


def pull(strata, fake, *extra):
    return strata("pull", "--tls-verify=false", *extra, fake.ref(), check=False)


def refused(strata, fake, *words):
    """Pulls, expecting a one-line failure naming the reference and WORDS, and no change to the store."""
    strata("images")  # creates the store
    before = strata.state()
    r = pull(strata, fake)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert fake.ref() in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert strata.state() == before
    assert strata("images", "-q").stdout == ""
    return r


def test_the_fake_serves_a_good_image(strata, fake):
    r = pull(strata, fake)
    assert r.returncode == 0, r.stderr
    assert strata.digest(fake.ref()) == sha(fake.manifest)


def test_wrong_bytes_for_a_digest(strata, fake):
    digest = layer_digest(fake)
    good = fake.blobs[digest]
    bad = bytes([good[0] ^ 0xFF]) + good[1:]
    fake.behave["blob:" + digest] = lambda h, body: send_range_of(h, bad, body)
    refused(strata, fake, digest, "does not match its digest")
    assert partials(strata) == []  # a wrong download is not kept for resuming


def send_range_of(h, data, body):
    send_range(h, data, body)
    return True


def test_wrong_config_bytes(strata, fake):
    digest = config_digest(fake)
    good = fake.blobs[digest]
    fake.behave["blob:" + digest] = lambda h, body: send_range_of(h, good.replace(b"{", b" ", 1), body)
    refused(strata, fake, digest, "does not match its digest")


def test_manifest_that_does_not_match_its_digest_header(strata, fake):
    other = fake.manifest.replace(b"{", b"{ ", 1)
    fake.behave["manifest"] = lambda h, body: send(h, 200, other, fake.media_type, body,
                                                   {"Docker-Content-Digest": sha(fake.manifest)}) or True
    refused(strata, fake, sha(fake.manifest), "does not match its digest")


def test_manifest_over_4_mib(strata, fake):
    huge = b'{"schemaVersion":2,"pad":"' + b"x" * (5 << 20) + b'"}'
    fake.behave["manifest"] = lambda h, body: send(h, 200, huge, fake.media_type, body) or True
    refused(strata, fake, "larger than 4 MiB")


def test_unknown_manifest_media_type(strata, fake):
    doc = json.loads(fake.manifest)
    doc["mediaType"] = "application/vnd.example.unknown+json"
    data = json.dumps(doc).encode()
    fake.behave["manifest"] = lambda h, body: send(h, 200, data, "application/vnd.example.unknown+json", body) or True
    refused(strata, fake, sha(data), "unknown manifest media type")


def test_schema_1_manifest(strata, fake):
    data = json.dumps({"schemaVersion": 1, "name": "hostile/app", "tag": "1", "fsLayers": [], "history": []}).encode()
    fake.behave["manifest"] = lambda h, body: send(
        h, 200, data, "application/vnd.docker.distribution.manifest.v1+prettyjws", body) or True
    refused(strata, fake, "schema 1")


def test_index_whose_platform_fields_are_not_strings(strata, fake):
    """The entries run nowhere; the message lists what the index has, as far as it says."""
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(fake.manifest),
         "size": len(fake.manifest), "platform": {"os": 1, "architecture": ["amd64"]}}]}).encode()
    fake.behave["manifest"] = lambda h, body: send(
        h, 200, index, "application/vnd.oci.image.index.v1+json", body) or True
    r = refused(strata, fake, sha(index), "has no image for linux/")
    assert "it has ?/?" in r.stderr, r.stderr


def test_error_body_whose_code_is_not_a_string(strata, fake):
    """The registry's message is still shown; the code that is no string is left out."""
    err = json.dumps({"errors": [{"code": 404, "message": "no such manifest"}]}).encode()
    fake.behave["manifest"] = lambda h, body: send(h, 400, err, "application/json", body) or True
    refused(strata, fake, "no such manifest")


def test_a_blob_larger_than_its_descriptor(strata, fake):
    digest = layer_digest(fake)
    fake.behave["blob:" + digest] = lambda h, body: send_range_of(h, fake.blobs[digest] + b"extra", body)
    refused(strata, fake, digest, "descriptor says")


def test_a_blob_longer_than_its_descriptor_without_a_length(strata, fake):
    digest = layer_digest(fake)

    def endless(h, body):
        # No Content-Length: the bytes just keep coming until the client stops.
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(64):
                h.wfile.write(fake.blobs[digest])
        except OSError:
            pass
        h.close_connection = True
        return True

    fake.behave["blob:" + digest] = endless
    refused(strata, fake, digest, "longer than")


def test_truncated_stream_is_resumed_with_a_range_request(strata, fake):
    digest = layer_digest(fake)
    data = fake.blobs[digest]
    calls = []

    def break_off_once(h, body):
        calls.append(h.headers.get("Range"))
        if len(calls) > 1:
            return False  # served normally (honouring Range)
        send(h, 200, data[: len(data) // 2], "application/octet-stream", body, length=len(data))
        h.close_connection = True
        return True

    fake.behave["blob:" + digest] = break_off_once
    r = pull(strata, fake)
    assert r.returncode == 0, r.stderr
    assert calls[0] is None and calls[1] == f"bytes={len(data) // 2}-"
    assert strata.digest(fake.ref()) == sha(fake.manifest)
    assert partials(strata) == []


def test_a_stream_that_always_breaks_gives_up(strata, fake):
    digest = layer_digest(fake)
    data = fake.blobs[digest]

    def never_complete(h, body):
        send(h, 200, data[:100], "application/octet-stream", body, length=len(data))
        h.close_connection = True
        return True

    fake.behave["blob:" + digest] = never_complete
    refused(strata, fake, digest, "gave up after")
    # What arrived is kept for the next pull to resume; prune removes it.
    assert len(partials(strata)) == 1
    strata("prune")
    assert partials(strata) == []


def test_429_waits_for_retry_after_then_succeeds(strata, fake):
    seen = []

    def throttle_once(h, body):
        seen.append(time.monotonic())
        if len(seen) == 1:
            send(h, 429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}', "application/json", body,
                 {"Retry-After": "1"})
            return True
        return False

    fake.behave["manifest"] = throttle_once
    r = pull(strata, fake)
    assert r.returncode == 0, r.stderr
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.9  # the second try waited as asked


def test_429_forever_is_bounded(strata, fake):
    fake.behave["manifest"] = lambda h, body: send(h, 429, b"{}", "application/json", body,
                                                   {"Retry-After": "0"}) or True
    refused(strata, fake, "429", "gave up after 5 attempts")
    assert sum(1 for m, p, _ in fake.requests if "/manifests/" in p) == 5
    # A Retry-After longer than strata waits is not waited for.
    fake.requests.clear()
    fake.behave["manifest"] = lambda h, body: send(h, 503, b"{}", "application/json", body,
                                                   {"Retry-After": "3600"}) or True
    refused(strata, fake, "503")
    assert sum(1 for m, p, _ in fake.requests if "/manifests/" in p) == 1


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/blob", "file:///etc/passwd"])
def test_redirect_to_another_scheme_is_refused(strata, fake, target):
    digest = layer_digest(fake)
    fake.behave["blob:" + digest] = lambda h, body: send(h, 307, b"", "text/plain", body, {"Location": target}) or True
    refused(strata, fake, digest, "another scheme")


def test_redirect_to_blob_storage_on_another_host_is_followed(strata, fake):
    digest = layer_digest(fake)
    storage = f"http://localhost:{fake.port}/storage/{digest}"

    def to_storage(h, body):
        return send(h, 307, b"", "text/plain", body, {"Location": storage}) or True

    fake.behave["blob:" + digest] = to_storage
    original = fake._answer

    def answer(h, body):
        if h.path.startswith("/storage/"):
            return send_range(h, fake.blobs[h.path.split("/")[-1]], body)
        return original(h, body)

    fake._answer = answer
    r = pull(strata, fake)
    assert r.returncode == 0, r.stderr


def test_interrupt_mid_pull_keeps_the_store_and_the_next_pull_resumes(strata, fake):
    digest = layer_digest(fake)
    data = fake.blobs[digest]
    half = len(data) // 2
    release = threading.Event()

    def stall(h, body):
        # Half the blob, then nothing until the test is over.
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        try:
            h.wfile.write(data[:half])
            h.wfile.flush()
        except OSError:
            return True
        release.wait(30)
        h.close_connection = True
        return True

    fake.behave["blob:" + digest] = stall
    strata("images")
    before = strata.state()
    proc = subprocess.Popen([tool("strata"), "--root", strata.root, "pull", "--tls-verify=false", fake.ref()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=strata.env())
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            p = partials(strata)
            if p and os.path.getsize(os.path.join(strata.root, "tmp", p[0])) >= half:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted" in err and fake.ref() in err
    assert strata.state() == before
    assert len(partials(strata)) == 1

    # The next pull picks up where this one stopped.
    del fake.behave["blob:" + digest]
    fake.requests.clear()
    r = pull(strata, fake)
    assert r.returncode == 0, r.stderr
    ranges = [hd.get("Range") for m, p, hd in fake.requests if p.endswith(digest)]
    assert ranges == [f"bytes={half}-"]
    assert strata.digest(fake.ref()) == sha(fake.manifest)
    assert partials(strata) == []
