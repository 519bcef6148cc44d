"""What anonymous bodies cost the gateway's memory (issue 19, item 1): starts `smsgate serve` with one tenant
taking the Supabase hook and `max_body_bytes: 1 MiB`, opens N connections to the hook from 32 loopback
addresses (127.0.0.10-41) with a fresh timestamp and a bogus signature, sends CHUNKS chunks of 64 KiB on
each (chunked, so nothing is reserved up front), waits 2 s, and prints the gateway's RSS before and after
and how many connections were answered 503 or closed.

usage: python3 bench/anonymous_bodies.py target/release/smsgate N [CHUNKS (16)]"""
import json, os, socket, subprocess, sys, time, tempfile

binary, n = sys.argv[1], int(sys.argv[2])
cfg = """server:
  listen: 127.0.0.1:0
  max_body_bytes: 1048576
  body_timeout: 60s
tenants:
  acme:
    tokens: ["test-token-acme-0001"]
    tencent:
      accessKeyId: AKIDx
      accessKeySecret: some-secret-key-0001
      sdkAppId: "1400006666"
      region: ap-guangzhou
      templates: [{ usageType: Generic, templateCode: "1" }]
      dry_run: true
    supabase: { secret: "v1,whsec_c21zZ2F0ZS1zdXBhYmFzZS10ZXN0LWtleS0x" }
"""
d = tempfile.mkdtemp()
path = os.path.join(d, "gw.yaml")
open(path, "w").write(cfg)
p = subprocess.Popen([binary, "serve", "--log-format", "json", "--config", path], stderr=subprocess.PIPE, text=True)
addr = None
for line in p.stderr:
    if "smsgate listening" in line:
        addr = json.loads(line)["addr"]
        break
host, port = addr.rsplit(":", 1)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
time.sleep(0.5)
before = rss()
now = int(time.time())
socks = []
chunk = b"a" * 65536
refused = 0
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.0.{10 + i % 32}", 0))
    s.connect((host, int(port)))
    s.sendall((f"POST /v1/supabase/sms HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nwebhook-id: m\r\n"
               f"webhook-timestamp: {now}\r\nwebhook-signature: v1,AAAA\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    socks.append(s)
for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 16):  # 64 KiB at a time
    for s in socks:
        try:
            s.sendall(b"10000\r\n" + chunk + b"\r\n")
        except OSError:
            pass
time.sleep(2)
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(100).startswith(b"HTTP/1.1 503"):
            refused += 1
    except BlockingIOError:
        pass
    except OSError:
        refused += 1
after = rss()
print(json.dumps({"connections": n, "rss_before_kib": before, "rss_after_kib": after,
                  "delta_mib": round((after - before) / 1024, 1), "answered_503_or_closed": refused}))
p.kill()
