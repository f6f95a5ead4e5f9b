# A webhook receiver for Confab in a dozen lines of the standard library: it checks
# Confab-Signature (HMAC-SHA256 of "<t>.<body>" under the webhook secret), refuses
# stale or forged deliveries, and dedupes by event id (delivery is at least once).
import hashlib, hmac, http.server, json, os, time

SECRET = os.environ["CONFAB_WEBHOOK_SECRET"].encode()
seen = set()

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        t, v1 = (part.split("=", 1)[1] for part in self.headers["Confab-Signature"].split(","))
        expected = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, v1) or abs(time.time() - int(t)) > 300:
            self.send_response(400), self.end_headers()
            return
        event = json.loads(body)
        if event["id"] not in seen:
            seen.add(event["id"])
            print(event["seq"], event["type"], event["data"].get("message", {}).get("text", ""), flush=True)
        self.send_response(204), self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "9000"))), Hook).serve_forever()
