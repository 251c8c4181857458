"""py2p's sync socket for the comparison with rs2p's P1: three SyncSockets in three processes on
127.0.0.1, KEYS keys (16-byte keys, 100-byte values) set on the first, and the time until the
last node holds them all.

    python py2p_sync.py KEYS            the driver: prints one JSON line
    python py2p_sync.py child ...       one node (started by the driver)

The driver's line: {"ms": <time until the last node held every key, or null>, "held": [per node],
"keys": KEYS}. Each node gives up PY2P_WAIT seconds (default 30) after the start (py2p's own
link bugs can stall a run)."""
import json, os, socket, subprocess, sys, tempfile, time

WAIT = float(os.environ.get("PY2P_WAIT", "30"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def child(port, keys, writer, peers):
    import py2p

    s = py2p.SyncSocket("127.0.0.1", port)
    for p in peers:
        s.connect("127.0.0.1", p)
    print("@@ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    if writer:
        print("@@start %f" % t0, flush=True)
        for k in range(keys):
            s["k%015d" % k] = b"v" * 100
    while len(s) < keys and time.time() - t0 < WAIT:
        time.sleep(0.001)
    print("@@done %f %d %d" % (time.time(), len(s), len(s.routing_table)), flush=True)
    sys.stdin.readline()


def expect(p, tag):
    """The next line of ours from a node (py2p prints its own lines too), split; [] at its end."""
    while True:
        line = p.stdout.readline()
        if not line:
            return []
        if line.startswith("@@" + tag):
            return line.split()


def driver(keys):
    ports = [free_port() for _ in range(3)]
    procs = []
    # py2p's nodes never link up when their stderr is /dev/null (seen with 0.7.878): give them a
    # real file.
    log = tempfile.TemporaryFile()
    for i, port in enumerate(ports):
        args = [sys.executable, __file__, "child", str(port), str(keys), "1" if i == 0 else "0"]
        args += [str(p) for p in ports[:i]]
        procs.append(subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=log, text=True))
        # The next node connects to this one: wait until it listens.
        if not expect(procs[-1], "ready"):
            print(json.dumps({"ms": None, "held": [], "keys": keys, "error": "a node did not start"}))
            for p in procs:
                p.kill()
            return
    try:
        time.sleep(3.0)  # let the links form
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        start = float(expect(procs[0], "start")[1])
        done, held, links = [], [], []
        for p in procs:
            parts = expect(p, "done")
            done.append(float(parts[1]) if parts else float("inf"))
            held.append(int(parts[2]) if parts else 0)
            links.append(int(parts[3]) if parts else 0)
        ok = all(h >= keys for h in held)
        ms = (max(done) - start) * 1000.0 if ok else None
        print(json.dumps({"ms": ms, "held": held, "keys": keys, "links": links}))
    finally:
        for p in procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except Exception:
                pass
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", [int(p) for p in sys.argv[5:]])
    else:
        driver(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
