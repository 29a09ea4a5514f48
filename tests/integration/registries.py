"""Registries for the registry tests, all on loopback ports: Debian's
docker-registry (distribution 2.8) plain, with htpasswd Basic auth, behind TLS
or with a Bearer token server written here; and a fake registry that
misbehaves on purpose. Each is started by a fixture and stopped in its
finalizer."""
import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import threading
import time
import urllib.request

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr}"
    return r.stdout


# ------------------------------------------------------------------ certificates

def make_ca_and_cert(d):
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it.
    Returns (ca.crt, server.crt, server.key)."""
    ca_key, ca_crt = f"{d}/ca.key", f"{d}/ca.crt"
    key, csr, crt, ext = f"{d}/server.key", f"{d}/server.csr", f"{d}/server.crt", f"{d}/ext.cnf"
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=strata test CA",
        "-keyout", ca_key, "-out", ca_crt])
    sh(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr])
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", crt])
    return ca_crt, crt, key


# ------------------------------------------------------------------ docker-registry

class Distribution:
    """docker-registry serving filesystem storage from a temporary directory."""

    def __init__(self, workdir, tls=None, htpasswd=None, token=None):
        self.dir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        os.makedirs(f"{workdir}/data", exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {workdir}/data", "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: strata-test-secret"]
        if tls:
            lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
        if htpasswd:
            lines += ["auth:", "  htpasswd:", "    realm: strata-test", f"    path: {htpasswd}"]
        if token:
            lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                      f"    issuer: {token.issuer}", f"    rootcertbundle: {token.cert}"]
        self.config = f"{workdir}/config.yml"
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(f"{workdir}/registry.log", "w")
        self.proc = subprocess.Popen(["docker-registry", "serve", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, self.proc)
        except Exception:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def htpasswd_file(path, user, password):
    out = sh(["htpasswd", "-Bbn", user, password])
    with open(path, "w") as f:
        f.write(out)
    return path


# ------------------------------------------------------------------ token server

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class TokenServer:
    """A Bearer token server as docker's distribution expects one: JWTs signed
    RS256 by a key whose certificate (x5c) the registry trusts. USERS maps
    user names to passwords; a known user gets every action asked for,
    anonymous requests get none. Every request is recorded."""

    def __init__(self, workdir, users):
        import jwt  # python3-jwt
        self._jwt = jwt
        self.users = users
        self.requests = []
        self.key = f"{workdir}/token.key"
        self.cert = f"{workdir}/token.crt"
        sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=strata token",
            "-keyout", self.key, "-out", self.cert])
        with open(self.key) as f:
            self._key_pem = f.read()
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], capture_output=True,
                             check=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self.service = "strata-test"
        self.issuer = "strata-test-issuer"
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server._answer(self)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, h):
        from urllib.parse import parse_qs, urlparse
        q = parse_qs(urlparse(h.path).query)
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(name) != pw:
                self.requests.append({"user": name, "scopes": q.get("scope", []), "refused": True})
                h.send_response(401)
                h.send_header("Content-Type", "application/json")
                h.end_headers()
                h.wfile.write(b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
                return
            user = name
        scopes = q.get("scope", [])
        self.requests.append({"user": user, "scopes": scopes, "refused": False})
        access = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",") if user else []})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "iat": now, "nbf": now - 10,
                  "exp": now + 300, "jti": os.urandom(8).hex(), "access": access}
        token = self._jwt.encode(claims, self._key_pem, algorithm="RS256", headers={"x5c": [self._x5c]})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ a fake registry

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Serves one image (MANIFEST bytes and BLOBS by digest) over plain http,
    misbehaving as told: BEHAVE maps a request kind ("manifest", "blob:DIGEST")
    to a function (handler, body) -> bool that may answer instead (returns
    True when it did). Every request is recorded as (method, path, headers)."""

    def __init__(self, repo, tag, manifest, media_type, blobs):
        self.repo, self.tag = repo, tag
        self.manifest, self.media_type, self.blobs = manifest, media_type, blobs
        self.behave = {}
        self.requests = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake._answer(self, body=True)

            def do_HEAD(self):
                fake._answer(self, body=False)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def ref(self):
        return f"{self.host}/{self.repo}:{self.tag}"

    def _answer(self, h, body):
        with self.lock:
            self.requests.append((h.command, h.path, dict(h.headers)))
        path = h.path.split("?")[0]
        if path == "/v2/":
            return send(h, 200, b"{}", "application/json", body)
        prefix = f"/v2/{self.repo}/"
        if not path.startswith(prefix):
            return send(h, 404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}',
                        "application/json", body)
        rest = path[len(prefix):]
        if rest.startswith("manifests/"):
            ref = rest[len("manifests/"):]
            if ref not in (self.tag, sha(self.manifest)):
                return send(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                            "application/json", body)
            b = self.behave.get("manifest")
            if b and b(h, body):
                return
            return send(h, 200, self.manifest, self.media_type, body, {"Docker-Content-Digest": sha(self.manifest)})
        if rest.startswith("blobs/"):
            digest = rest[len("blobs/"):]
            data = self.blobs.get(digest)
            if data is None:
                return send(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}',
                            "application/json", body)
            b = self.behave.get("blob:" + digest)
            if b and b(h, body):
                return
            return send_range(h, data, body)
        return send(h, 404, b"", "text/plain", body)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(h, status, data, ctype, body=True, headers=None, length=None):
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data) if length is None else length))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if body:
        h.wfile.write(data)


def send_range(h, data, body=True):
    """A blob, honouring "Range: bytes=N-"."""
    rng = h.headers.get("Range")
    if rng and rng.startswith("bytes="):
        start = int(rng[6:].split("-")[0])
        part = data[start:]
        h.send_response(206)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(part)))
        h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if body:
            h.wfile.write(part)
        return
    send(h, 200, data, "application/octet-stream", body)


def image_from_layout(layout, name):
    """(manifest bytes, media type, {digest: bytes}) of the image NAME in the
    OCI layout directory LAYOUT (for FakeRegistry)."""
    with open(f"{layout}/index.json") as f:
        index = json.load(f)
    desc = None
    for m in index["manifests"]:
        ann = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        if ann in (name, name.split(":")[-1]) or ann.endswith("/" + name) or desc is None:
            desc = m
    def blob(d):
        with open(f"{layout}/blobs/sha256/{d.split(':')[1]}", "rb") as f:
            return f.read()
    manifest = blob(desc["digest"])
    m = json.loads(manifest)
    blobs = {m["config"]["digest"]: blob(m["config"]["digest"])}
    for layer in m["layers"]:
        blobs[layer["digest"]] = blob(layer["digest"])
    return manifest, m.get("mediaType", desc["mediaType"]), blobs


@pytest.fixture
def servers():
    """Collects servers a test starts and stops them all at the end."""
    started = []

    class Servers:
        def add(self, s):
            started.append(s)
            return s

    try:
        yield Servers()
    finally:
        for s in reversed(started):
            try:
                s.stop()
            except Exception:
                pass
