#!/usr/bin/env bash
# The host integration end to end, on a fresh data directory: a marketplace backend
# provisions its users and a job over the server API, signs tokens for them, and
# receives every event as a signed webhook (examples/integration/receiver.py).
#
#   bash examples/integration/demo.sh          # builds and runs the debug binary
#   CONFAB_BIN=target/release/confab bash examples/integration/demo.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
if [ -z "${CONFAB_BIN:-}" ]; then
  cargo build -q
  CONFAB_BIN=target/debug/confab
fi

export CONFAB_HOST_JWT_SECRET=demo-host-secret-demo-host-secret-0000
export CONFAB_HOST_JWT_ISSUER=https://market.example
export CONFAB_SERVER_API_KEY=demo-server-key-demo-server-key-00000
export CONFAB_WEBHOOK_SECRET=demo-webhook-secret-demo-webhook-000

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hook_port=$(free_port)
port=$(free_port)
data=$(mktemp -d)
received="$data/received.txt"
cleanup() { kill "${confab_pid:-}" "${receiver_pid:-}" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

PORT=$hook_port python3 "$here/receiver.py" > "$received" &
receiver_pid=$!
"$CONFAB_BIN" serve --listen "127.0.0.1:$port" --data-dir "$data/confab" \
  --webhook-url "http://127.0.0.1:$hook_port/hook" > "$data/confab.log" 2>&1 &
confab_pid=$!
B="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$B/readyz" > /dev/null && break; sleep 0.1; done

KEY="Authorization: Bearer $CONFAB_SERVER_API_KEY"
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

echo "== the marketplace backend provisions its users and a job (server API)"
curl -sf -X PUT "$B/api/server/users/c-1/" -H "$KEY" -d '{"full_name": "Carla Client", "role": "client"}'; echo
fran=$(curl -sf -X PUT "$B/api/server/users/f-1/" -H "$KEY" -d '{"full_name": "Fran Freelancer", "role": "freelancer", "username": "fran"}' | field '["user"]["id"]')
curl -sf -X PUT "$B/api/server/jobs/job-42/" -H "$KEY" -d '{"title": "A logo", "client_external_id": "c-1"}'; echo

echo "== its users arrive with tokens it signs (no sign-up here)"
CLIENT=$(python3 "$here/host_token.py" c-1 "Carla Client" client)
FREELANCER=$(python3 "$here/host_token.py" f-1 "Fran Freelancer" freelancer fran)
curl -sf "$B/api/auth/me/" -H "Authorization: Bearer $CLIENT"; echo

echo "== Hire Me, a message, a read, and the marketplace's own system message"
thread=$(curl -sf "$B/api/chat/hire-freelancer/" -H "Authorization: Bearer $CLIENT" -d "{\"freelancer_id\": $fran}" | field '["thread"]["id"]')
curl -sf "$B/api/chat/threads/$thread/messages/" -H "Authorization: Bearer $FREELANCER" -d '{"text": "Happy to help!"}' > /dev/null
curl -sf "$B/api/chat/threads/$thread/read/" -H "Authorization: Bearer $CLIENT" -d '{}' > /dev/null
curl -sf "$B/api/server/threads/$thread/messages/" -H "$KEY" \
  -d '{"text": "Offer accepted", "metadata": {"event": "offer_accepted"}, "client_msg_id": "offer-1"}' > /dev/null

echo "== the webhooks the receiver verified (seq, type, text)"
expected=5  # thread.created, its system message, the reply, the read, the offer
for _ in $(seq 100); do [ "$(wc -l < "$received")" -ge $expected ] && break; sleep 0.1; done
cat "$received"
[ "$(wc -l < "$received")" -eq $expected ] || { echo "expected $expected events" >&2; exit 1; }

echo "== and the same events replayed from a cursor"
curl -sf "$B/api/server/events/?after=3" -H "$KEY" \
  | python3 -c 'import json, sys; [print(e["seq"], e["type"], e["id"]) for e in json.load(sys.stdin)["results"]]'
