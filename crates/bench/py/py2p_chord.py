"""py2p's chord socket for comparison with rs2p's P9: 3 nodes in one process on 127.0.0.1,
keys set on A, gets from C. Prints one JSON line with the get latencies in ms."""
import json, random, socket, sys, time

import py2p

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def main():
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    gets = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    nodes = [py2p.ChordSocket("127.0.0.1", free_port()) for _ in range(3)]
    for n in nodes[1:]:
        n.connect("127.0.0.1", nodes[0].addr[1])
    time.sleep(1.0)
    for n in nodes:
        n.join()
    time.sleep(2.0)
    a, c = nodes[0], nodes[-1]
    for k in range(keys):
        a.set("key-%d" % k, b"value-%d" % k)
    time.sleep(1.0)
    lat, ok = [], 0
    for _ in range(gets):
        k = random.randrange(keys)
        t = time.perf_counter()
        try:
            v = c.getSync("key-%d" % k, timeout=5)
            ok += v == b"value-%d" % k
        except Exception:
            pass
        lat.append((time.perf_counter() - t) * 1000.0)
    print(json.dumps({"get_ms": lat, "correct": ok, "gets": gets}))

if __name__ == "__main__":
    main()
