# Server memory after large WebSocket frames: U users x C connections each send one
# 1 MiB frame (an over-long text, refused with payload_too_large), three rounds,
# with the server's RSS per round. Needs `pip install -r scripts/bench/requirements.txt`.
#   python3 scripts/bench/large_frames.py <server pid> 10 15 <run tag>
# (the server on 127.0.0.1:18080; see docs/benchmarks.md)
import asyncio, json, sys, urllib.request, websockets
BASE="http://127.0.0.1:18080"
def post(path, body, token=None):
    req=urllib.request.Request(BASE+path, data=json.dumps(body).encode(), headers={"content-type":"application/json"})
    return json.loads(urllib.request.urlopen(req).read())
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])//1024
async def main(pid, users, per):
    socks=[]
    for u in range(users):
        name=f"u{u}x{sys.argv[4]}"
        post("/api/auth/register/", {"username":name,"password":"testpass123","full_name":"M","role":"client"})
        tok=post("/api/auth/token/", {"username":name,"password":"testpass123"})["access"]
        socks += [await websockets.connect(f"ws://127.0.0.1:18080/ws/chat/?token={tok}", max_size=None) for _ in range(per)]
    await asyncio.sleep(1)
    base=rss(pid); print("connected", len(socks), "rss MiB", base)
    big=json.dumps({"type":"message","recipient_id":1,"text":"x"*(1000*1024),"client_msg_id":"k"})
    for rnd in range(3):
        for s in socks:
            await s.send(big); r=json.loads(await s.recv()); assert r["error"]=="payload_too_large", r
        await asyncio.sleep(1)
        print("round", rnd, "after one big frame on each, one at a time: rss MiB", rss(pid), "delta", rss(pid)-base)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
