"""Container networking: --network private|bridge|host|none, -p, --dns, --add-host, slirp4netns's lifetime.

Only loopback addresses are used: published ports are reached at 127.0.0.1, and nothing leaves the machine.
"""
import json
import os
import socket
import subprocess
import threading
import urllib.request

import pytest

from conftest import base_store, remove_all_containers, tool
from test_lifecycle import eventually, host_mounts_under, processes_of


@pytest.fixture
def store(workdir, base_tar):
    s = base_store(workdir, base_tar)
    try:
        yield s
    finally:
        remove_all_containers(s)
        eventually(lambda: processes_of(s.root) == [], "every process of the store ended")
        assert host_mounts_under(s.root) == []


def interfaces(text):
    """The interface names in a /proc/net/dev listing."""
    return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:] if ":" in line)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetcher(port):
    """A function that GETs index.html from 127.0.0.1:PORT, None while nothing answers."""
    def fetch():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return None
    return fetch


def slirp_children(pid):
    """The slirp4netns processes whose parent is PID."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() == "slirp4netns" and fields.get("PPid", "").strip() == str(pid):
            found.append(int(p))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except OSError:
        return False


def test_default_network_is_private_with_lo_and_tap0(store):
    r = store("run", "--rm", "base:1", "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    assert interfaces(r.stdout) == ["lo", "tap0"]
    # The address, the route and the name files slirp4netns's network wants.
    r = store("run", "--rm", "--hostname", "box", "base:1", "sh", "-c",
              "ip -o -4 addr show tap0; ip route; cat /etc/resolv.conf /etc/hosts")
    assert r.returncode == 0, r.stderr
    assert "10.0.2.100/24" in r.stdout
    assert "default via 10.0.2.2" in r.stdout
    assert "nameserver 10.0.2.3" in r.stdout
    assert "10.0.2.100\tbox" in r.stdout


def test_bridge_is_private(store):
    r = store("run", "--rm", "--network", "bridge", "base:1", "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    assert interfaces(r.stdout) == ["lo", "tap0"]


def test_network_none_has_only_loopback(store):
    r = store("run", "--rm", "--network", "none", "base:1", "sh", "-c", "cat /proc/net/dev; echo ---; ip -o link show lo")
    assert r.returncode == 0, r.stderr
    dev, lo = r.stdout.split("---\n")
    assert interfaces(dev) == ["lo"]
    assert "UP" in lo


def test_network_host_sees_the_hosts_interfaces(store):
    with open("/proc/net/dev") as f:
        host = interfaces(f.read())
    r = store("run", "--rm", "--network", "host", "base:1", "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    assert interfaces(r.stdout) == host


def test_unknown_network_is_refused(store):
    r = store("run", "--rm", "--network", "nat", "base:1", "true")
    assert r.returncode == 125
    assert "unknown network 'nat'" in r.stderr


def test_published_port_is_reached_from_the_host_and_listed(store):
    port = free_port()
    r = store("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "base:1", "sh", "-c",
              "mkdir -p /www && echo hello from the container > /www/index.html && exec httpd -f -p 80 -h /www")
    assert r.returncode == 0, r.stderr
    fetch = fetcher(port)
    assert eventually(fetch, "the published port answers") == "hello from the container\n"
    ps = store("ps", "--format", "{{.Names}} {{.Ports}}")
    assert ps.returncode == 0, ps.stderr
    assert f"web 127.0.0.1:{port}->80/tcp" in ps.stdout.splitlines()
    assert "PORTS" in store("ps").stdout
    info = json.loads(store("inspect", "web").stdout)[0]
    assert info["HostConfig"]["NetworkMode"] == "private"
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert info["NetworkSettings"]["IPAddress"] == "10.0.2.100"
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    # exec joins the container's network namespace.
    r = store("exec", "web", "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    assert interfaces(r.stdout) == ["lo", "tap0"]
    # slirp4netns runs under the monitor as long as the container, and ends with it.
    monitor = info["State"]["MonitorPid"]
    slirps = slirp_children(monitor)
    assert len(slirps) == 1
    assert store("stop", "-t", "1", "web").returncode == 0
    eventually(lambda: not any(alive(p) for p in slirps), "slirp4netns ended with the container")
    assert store("ps", "--format", "{{.Names}} [{{.Ports}}]").stdout.splitlines() == ["web []"]
    assert fetch() is None
    # start publishes the port again, from the saved configuration.
    assert store("start", "web").returncode == 0
    assert eventually(fetch, "the published port answers after start") == "hello from the container\n"
    slirps = slirp_children(json.loads(store("inspect", "web").stdout)[0]["State"]["MonitorPid"])
    assert len(slirps) == 1
    assert store("rm", "-f", "web").returncode == 0
    eventually(lambda: not any(alive(p) for p in slirps), "slirp4netns ended with the removed container")
    assert fetch() is None


def test_killed_monitor_takes_slirp4netns_with_it(store):
    r = store("run", "-d", "--name", "victim", "base:1", "sleep", "300")
    assert r.returncode == 0, r.stderr
    monitor = json.loads(store("inspect", "victim").stdout)[0]["State"]["MonitorPid"]
    slirps = slirp_children(monitor)
    assert len(slirps) == 1
    os.kill(monitor, 9)
    eventually(lambda: not alive(slirps[0]), "slirp4netns ended with its monitor")


def api_socket_dir(slirp):
    """The runtime directory of slirp4netns SLIRP: where its --api-socket is."""
    with open(f"/proc/{slirp}/cmdline") as f:
        args = f.read().split("\0")
    return os.path.dirname(args[args.index("--api-socket") + 1])


@pytest.mark.parametrize("remove", [["rm", "victim"], ["container", "prune", "-f"]])
def test_runtime_directory_of_a_killed_run_is_removed_by_rm_and_prune(store, remove):
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "--name", "victim", "--dns", "10.0.2.3",
                          "base:1", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: " Up " in store("ps").stdout, "the container runs")
        slirps = slirp_children(p.pid)
        runtime = api_socket_dir(slirps[0])
        assert os.path.basename(runtime).startswith("strata-net.")
        os.kill(p.pid, 9)
        p.wait(timeout=20)
        eventually(lambda: not alive(slirps[0]), "slirp4netns ended with strata")
        assert os.path.isdir(runtime)  # nobody was left to remove it
        eventually(lambda: "Exited (255)" in store("ps", "-a").stdout, "the container is no longer running")
        r = store(*remove)
        assert r.returncode == 0, r.stderr
        assert not os.path.exists(runtime)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_foreground_run_leaves_no_slirp4netns(store):
    port = free_port()
    r = store("run", "--rm", "-p", f"127.0.0.1:{port}:80", "base:1", "true")
    assert r.returncode == 0, r.stderr
    # Nothing listens on the port any more: slirp4netns is gone.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_publishing_a_port_in_use_fails_clearly(store):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = store("run", "--rm", "-p", f"127.0.0.1:{port}:80", "base:1", "true")
    assert r.returncode == 125
    assert f"publish 127.0.0.1:{port}->80/tcp" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_dns_and_add_host(store):
    r = store("run", "--rm", "--dns", "192.0.2.53", "--dns", "2001:db8::53", "--add-host", "db.local:192.0.2.7",
              "--add-host", "gw:host-gateway", "base:1", "sh", "-c", "cat /etc/resolv.conf; echo ---; cat /etc/hosts")
    assert r.returncode == 0, r.stderr
    resolv, hosts = r.stdout.split("---\n")
    servers = [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")]
    assert servers == ["192.0.2.53", "2001:db8::53"]
    assert "192.0.2.7\tdb.local" in hosts.splitlines()
    assert "10.0.2.2\tgw" in hosts.splitlines()
    assert "127.0.0.1\tlocalhost" in hosts.splitlines()


def test_add_host_with_host_network_keeps_the_hosts_entries(store):
    with open("/etc/hosts") as f:
        host = f.read()
    r = store("run", "--rm", "--network", "host", "--add-host", "extra.test:192.0.2.9", "base:1", "cat", "/etc/hosts")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(host)
    assert r.stdout.endswith("192.0.2.9\textra.test\n")


def test_created_container_keeps_its_network_settings(store):
    port = free_port()
    r = store("create", "--name", "later", "-p", f"127.0.0.1:{port}:8080/udp", "--dns", "192.0.2.1",
              "--add-host", "a:192.0.2.2", "base:1")
    assert r.returncode == 0, r.stderr
    info = json.loads(store("inspect", "later").stdout)[0]
    assert info["HostConfig"]["PortBindings"] == {"8080/udp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert info["HostConfig"]["Dns"] == ["192.0.2.1"]
    assert info["HostConfig"]["ExtraHosts"] == ["a:192.0.2.2"]
    assert info["NetworkSettings"]["IPAddress"] == ""


def test_publish_needs_a_private_network(store):
    for network in ("host", "none"):
        r = store("run", "--rm", "--network", network, "-p", "127.0.0.1:8080:80", "base:1", "true")
        assert r.returncode == 125
        assert f"-p publishes ports of a private network, not with --network {network}" in r.stderr


BAD_PUBLISH = [
    ("127.0.0.1:0:80", "host port '0' is not a number from 1 to 65535 (leave the host port out to have one chosen)"),
    ("0:80", "host port '0' is not a number from 1 to 65535"),
    ("127.0.0.1:70000:80", "host port '70000' is not a number from 1 to 65535"),
    ("70000:80", "host port '70000' is not a number from 1 to 65535"),
    ("8080:0", "container port '0' is not a number from 1 to 65535"),
    ("garbage", "container port 'garbage' is not a number from 1 to 65535"),
    ("127.0.0.1:8080:", "the container port is missing"),
    ("8080:", "the container port is missing"),
    (":80", "the host port is missing"),
    ("8080:80/sctp", "the protocol must be tcp or udp"),
    ("localhost:8080:80", "'localhost' is not an IPv4 address"),
    ("1:2:3:4", "too many ':'"),
    ("80-70:80-70", "range '80-70' goes down"),
    ("8080-8082:80", "a host range needs a container range of the same length"),
    ("8080:80-82", "a host range needs a container range of the same length"),
    ("1-1001", "container port range '1-1001' has 1001 ports (at most 1000)"),
    ("[::1]:8080:80", "IPv6 host addresses cannot be published (slirp4netns forwards IPv4 ones only)"),
    (":::80", "IPv6 host addresses cannot be published"),
    ("[::1:8080:80", "no ']' after the host address"),
    ("[10.0.0.1]:8080:80", "'10.0.0.1' is not an IPv6 address"),
]


def test_bad_publish_specs_are_refused(store):
    for spec, why in BAD_PUBLISH:
        r = store("run", "--rm", "-p", spec, "base:1", "true")
        assert r.returncode == 125, spec
        assert f"bad port mapping '{spec}': " in r.stderr
        assert why in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # Nothing was created.
    assert store("ps", "-aq").stdout == ""


def test_a_host_port_published_twice_is_refused(store):
    for specs in (["8080:80", "8080:81"], ["127.0.0.1:8080:80", "8080:81"], ["8080-8081:80-81", "8081:90"]):
        args = [a for spec in specs for a in ("-p", spec)]
        r = store("run", "--rm", *args, "base:1", "true")
        assert r.returncode == 125, specs
        assert "is published twice" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # The same host port for tcp and udp is two ports.
    port = free_port()
    r = store("run", "--rm", "-p", f"127.0.0.1:{port}:80", "-p", f"127.0.0.1:{port}:80/udp", "base:1", "true")
    assert r.returncode == 0, r.stderr
    assert store("ps", "-aq").stdout == ""


def test_publish_all_needs_a_private_network_and_an_image(store, workdir):
    r = store("run", "--rm", "--network", "host", "-P", "base:1", "true")
    assert r.returncode == 125
    assert "-P publishes ports of a private network, not with --network host" in r.stderr
    r = store("run", "--rm", "--expose", "80/sctp", "base:1", "true")
    assert r.returncode == 125
    assert "bad exposed port '80/sctp': the protocol must be tcp or udp" in r.stderr
    rootfs = os.path.join(workdir, "rootfs")
    os.mkdir(rootfs)
    r = store("run", "--rootfs", rootfs, "-P", "true")
    assert r.returncode == 125
    assert "-P needs an IMAGE" in r.stderr
    r = store("run", "--rootfs", rootfs, "-p", "80", "true")
    assert r.returncode == 125
    assert "-p without a host port needs an IMAGE" in r.stderr


def serve(text, ports):
    """A container command: httpd serving TEXT as index.html on each of PORTS (until stopped)."""
    servers = " ".join(f"httpd -p {p} -h /www;" for p in ports)
    return ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && {servers} exec sleep 300"]


def test_a_chosen_host_port_is_reached_and_reported_alike(store):
    r = store("run", "-d", "--name", "web", "-p", "127.0.0.1::80", "base:1", *serve("chosen", [80]))
    assert r.returncode == 0, r.stderr
    port = store("port", "web", "80")
    assert port.returncode == 0, port.stderr
    host, _, number = port.stdout.strip().rpartition(":")
    assert host == "127.0.0.1"
    assert number.isdigit() and int(number) > 0
    assert eventually(fetcher(number), "the chosen port answers") == "chosen\n"
    assert store("port", "web").stdout == f"80/tcp -> 127.0.0.1:{number}\n"
    assert store("port", "web", "80/tcp").stdout == f"127.0.0.1:{number}\n"
    ps = store("ps", "--format", "{{.Names}} {{.Ports}}")
    assert f"web 127.0.0.1:{number}->80/tcp" in ps.stdout.splitlines()
    info = json.loads(store("inspect", "web").stdout)[0]
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": number}]}
    # What was asked for: a chosen port, as docker shows it.
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    # Stopped, it has no published port, as docker's.
    assert store("stop", "-t", "1", "web").returncode == 0
    r = store("port", "web")
    assert r.returncode == 0 and r.stdout == ""
    r = store("port", "web", "80")
    assert r.returncode == 1
    assert r.stderr.strip() == "strata: no public port '80/tcp' published for 'web'"
    assert json.loads(store("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"] == {}
    # start chooses again, and reports the new port.
    assert store("start", "web").returncode == 0
    number = store("port", "web", "80").stdout.strip().rpartition(":")[2]
    assert eventually(fetcher(number), "the port chosen at start answers") == "chosen\n"


def test_a_port_range_is_reached_on_each_port(store):
    first = free_port()
    while True:
        # Two free neighbours.
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", first))
                b.bind(("127.0.0.1", first + 1))
                break
            except OSError:
                first = free_port()
    r = store("run", "-d", "--name", "range", "-p", f"127.0.0.1:{first}-{first + 1}:80-81", "base:1",
              *serve("ranged", [80, 81]))
    assert r.returncode == 0, r.stderr
    assert eventually(fetcher(first), "the range's first port answers") == "ranged\n"
    assert eventually(fetcher(first + 1), "the range's second port answers") == "ranged\n"
    assert store("port", "range").stdout == f"80/tcp -> 127.0.0.1:{first}\n81/tcp -> 127.0.0.1:{first + 1}\n"
    ps = store("ps", "--format", "{{.Names}} {{.Ports}}")
    assert f"range 127.0.0.1:{first}-{first + 1}->80-81/tcp" in ps.stdout.splitlines()
    info = json.loads(store("inspect", "range").stdout)[0]
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(first)}],
                                                  "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(first + 1)}]}


def test_publish_all_publishes_every_exposed_port(store):
    assert store("create", "--name", "tmp", "base:1").returncode == 0
    r = store("commit", "-c", "EXPOSE 80", "-c", "EXPOSE 53/udp", "tmp", "exposing:1")
    assert r.returncode == 0, r.stderr
    r = store("run", "-d", "--name", "all", "-P", "--expose", "81", "exposing:1", *serve("everything", [80, 81]))
    assert r.returncode == 0, r.stderr
    lines = store("port", "all").stdout.splitlines()
    assert sorted(line.split(" -> ")[0] for line in lines) == ["53/udp", "80/tcp", "81/tcp"]
    for line in lines:
        assert line.split(" -> ")[1].startswith("0.0.0.0:")
    for private in ("80", "81"):
        number = store("port", "all", private).stdout.strip().rpartition(":")[2]
        assert eventually(fetcher(number), f"the port published for {private} answers") == "everything\n"
    info = json.loads(store("inspect", "all").stdout)[0]
    assert info["HostConfig"]["PublishAllPorts"] is True
    assert info["Config"]["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}, "81/tcp": {}}
    assert sorted(info["NetworkSettings"]["Ports"]) == ["53/udp", "80/tcp", "81/tcp"]


def test_port_refuses_bad_arguments(store):
    assert store("create", "--name", "quiet", "base:1").returncode == 0
    for args, code, message in ((["port"], 2, "container"), (["port", "nosuch"], 1, "nosuch"),
                                (["port", "quiet", "80/sctp"], 2, "port: bad private port '80/sctp'"),
                                (["port", "quiet", "80-81"], 2, "port: bad private port '80-81'"),
                                (["port", "quiet", "80", "81"], 2, ""),
                                (["port", "quiet", "../../etc"], 2, "port: bad private port")):
        r = store(*args)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


BAD_NAMES = [
    ("--dns", "not-an-ip", "bad DNS server 'not-an-ip'"),
    ("--add-host", "nocolon", "bad host entry 'nocolon': no ':'"),
    ("--add-host", "name:999.1.1.1", "'999.1.1.1' is not an IP address"),
    ("--add-host", "bad name:192.0.2.1", "the name may hold only"),
    ("--add-host", ":192.0.2.1", "the name is empty"),
]


def test_bad_dns_and_host_entries_are_refused(store):
    for flag, value, message in BAD_NAMES:
        r = store("run", "--rm", flag, value, "base:1", "true")
        assert r.returncode == 125, value
        assert message in r.stderr


def test_host_loopback_is_not_reachable_from_the_container(store):
    accepted = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def serve():
            try:
                conn, _ = server.accept()
                accepted.append(True)
                conn.sendall(b"host secret\n")
                conn.close()
            except OSError:
                pass

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        r = store("run", "--rm", "base:1", "sh", "-c", f"nc -w 3 10.0.2.2 {port} </dev/null; echo rc=$?")
        assert r.returncode == 0, r.stderr
        assert "host secret" not in r.stdout
        assert accepted == []
        # The same service is there for the host itself.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            assert c.recv(100) == b"host secret\n"
        t.join(5)


def test_missing_slirp4netns_is_a_clear_error(store, workdir):
    empty = os.path.join(workdir, "empty-path")
    os.mkdir(empty)
    env = dict(os.environ, PATH=empty)
    r = store("run", "--rm", "base:1", "true", env=env)
    assert r.returncode == 125
    assert r.stderr.strip().splitlines() == [
        "strata: slirp4netns is not installed (needed for private networking): install it "
        "(apt-get install slirp4netns) or use --network host or --network none"]
    # host and none do not need it.
    assert store("run", "--rm", "--network", "none", "base:1", "true", env=env).returncode == 0


def test_an_edited_saved_port_is_refused_at_start(store):
    r = store("create", "--name", "edited", "-p", "127.0.0.1::80", "base:1", "true")
    assert r.returncode == 0, r.stderr
    path = os.path.join(store.root, "containers", r.stdout.strip(), "config.json")
    with open(path) as f:
        config = json.load(f)
    assert config["Ports"] == [{"HostIp": "127.0.0.1", "HostPort": 0, "ContainerPort": 80, "Protocol": "tcp"}]
    for bad in ({"HostIp": "::1"}, {"HostPort": 70000}, {"ContainerPort": "80"}, {"Protocol": "sctp"}):
        with open(path, "w") as f:
            json.dump(dict(config, Ports=[dict(config["Ports"][0], **bad)]), f)
        r = store("start", "edited")
        assert r.returncode != 0, bad
        assert "the network settings of 'edited': bad port mapping" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
