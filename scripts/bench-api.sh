#!/usr/bin/env bash
# API benchmark (docs/api.md): a timing harness, nothing is asserted.
#
# 1. API request latency: median (and 90th percentile) of N GET requests to
#    `cvmm serve`, over one kept-alive connection and over a new connection each,
#    from a Python HTTP client on the Unix socket (its own cost included).
# 2. Launch latency through the API against `cvmm run` for the same VM (the demo
#    guest), interleaved in the same run: from the `PUT /v1/vm/boot` request (VM
#    already created) and from the `PUT /v1/vm` request (create + boot) to the guest's
#    first console byte on the server's stdout, against process start -> first output
#    of `cvmm run`.
#
# usage: scripts/bench-api.sh [RUNS] [GETS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
gets="${2:-2000}"
cargo build --release -q -p vmm --bin cvmm
exec python3 - "$runs" "$gets" "target/release/cvmm" <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, tempfile, time

runs, gets, cvmm = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def request(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    data = r.read()
    return r.status, data

def ms(xs, q=None):
    if q is None:
        return statistics.median(xs) * 1e3
    return statistics.quantiles(xs, n=100)[q - 1] * 1e3

def read_first_byte(fd):
    os.set_blocking(fd, True)
    b = os.read(fd, 1)
    if not b:
        sys.exit("cvmm serve closed its stdout")

def drain(fd):
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass

def wait_exited(path):
    c = UnixHTTPConnection(path)
    deadline = time.time() + 30
    while time.time() < deadline:
        status, body = request(c, "GET", "/v1/vm")
        if json.loads(body)["state"] == "exited":
            return json.loads(body)
        time.sleep(0.001)
    sys.exit("the VM did not exit")

tmp = tempfile.mkdtemp(prefix="cvmm-bench-api-")
sock = os.path.join(tmp, "api.sock")
serve = subprocess.Popen([cvmm, "serve", "--api-socket", sock], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out = serve.stdout.fileno()
deadline = time.time() + 30
while not os.path.exists(sock):
    if time.time() > deadline or serve.poll() is not None:
        sys.exit("cvmm serve did not start: " + serve.stderr.read().decode())
    time.sleep(0.005)

try:
    # 1. Request latency.
    conn = UnixHTTPConnection(sock)
    status, _ = request(conn, "PUT", "/v1/vm", b"{}")
    assert status == 204, status
    status, _ = request(conn, "PUT", "/v1/vm/boot")
    assert status == 204, status
    wait_exited(sock)
    for _ in range(50):  # warm-up
        request(conn, "GET", "/v1/vm")
    keep, fresh, ping = [], [], []
    for _ in range(gets):
        t0 = time.perf_counter()
        status, _ = request(conn, "GET", "/v1/vm")
        keep.append(time.perf_counter() - t0)
        assert status == 200
        t0 = time.perf_counter()
        status, _ = request(conn, "GET", "/v1/vmm/ping")
        ping.append(time.perf_counter() - t0)
        c = UnixHTTPConnection(sock)
        t0 = time.perf_counter()
        status, _ = request(c, "GET", "/v1/vm")
        fresh.append(time.perf_counter() - t0)
        c.close()

    # 2. Boot -> first output, against cvmm run, interleaved.
    api_boot, api_create_boot, run_first = [], [], []
    for _ in range(runs):
        drain(out)
        t0 = time.perf_counter()
        status, body = request(conn, "PUT", "/v1/vm", b"{}")
        assert status == 204, body
        t1 = time.perf_counter()
        status, body = request(conn, "PUT", "/v1/vm/boot")
        assert status == 204, body
        read_first_byte(out)
        t2 = time.perf_counter()
        api_create_boot.append(t2 - t0)
        api_boot.append(t2 - t1)
        info = wait_exited(sock)
        assert info["exit"]["exit_status"] == 0, info

        t0 = time.perf_counter()
        p = subprocess.Popen([cvmm, "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = p.stdout.read(1)
        run_first.append(time.perf_counter() - t0)
        rest, err = p.communicate()
        if p.returncode != 0 or not first:
            sys.exit(f"cvmm run failed ({p.returncode}): {err.decode()}")
    request(conn, "PUT", "/v1/vmm/shutdown")
finally:
    if serve.poll() is None:
        serve.kill()
    serve.wait()

def row(name, value):
    print(f"{name:<60}{value:>10.3f} ms")

print(f"cvmm API benchmark: {gets} requests of each kind, {runs} launches of each kind; medians unless noted")
row("GET /v1/vm, kept-alive connection", ms(keep))
row("GET /v1/vm, kept-alive connection (p90)", ms(keep, 90))
row("GET /v1/vmm/ping, kept-alive connection", ms(ping))
row("GET /v1/vm, new connection each", ms(fresh))
row("GET /v1/vm, new connection each (p90)", ms(fresh, 90))
row("API: PUT /v1/vm/boot -> first guest output", ms(api_boot))
row("API: PUT /v1/vm + PUT /v1/vm/boot -> first guest output", ms(api_create_boot))
row("cvmm run: process start -> first guest output", ms(run_first))
PY
